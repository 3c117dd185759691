"""The shapes world: the embedded default text-to-image world (docs/shapes-world.md).

32x32 RGB scenes of flat-coloured circles, squares and triangles on black, prompts in GenEval's format for
all six tags, and GenEval's reward whose only difference from the real one is the detector.

Modules: `world` (constants), `grammar` (prompts, metadata, held-out split, tokens), `render` (scenes that
satisfy metadata), `detector` (rule-based detector, the `shapes` GenEval detector backend), `reward` (the
`shapes-geneval` preset of `geneval`), `model` and `policy` (the tiny UNet, `shapes-tiny`), `pretrain` (the
shipped checkpoint's recipe). `plugin` registers them through the `nft` hooks like any third-party plugin.
Submodules are imported on demand so that importing the package stays cheap.
"""
