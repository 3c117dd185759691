"""What every diffusers flow-transformer policy shares: `options` (no diffusers import), `loading`
(find a pipeline folder, clear errors), `lora` (the adapter views), `layout` (latent packing, padded
text, the schedulers' time shift) and `policy` (the base class)."""
