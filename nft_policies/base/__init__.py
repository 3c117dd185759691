"""What every diffusers flow-transformer policy shares: `options` (no diffusers import), `loading`
(find a pipeline folder, clear errors), `lora` (the adapter views) and `policy` (the base class)."""
