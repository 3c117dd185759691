"""The shapes world: the embedded default text-to-image world (docs: shapes-world.md).

32x32 RGB scenes of flat-coloured circles, squares and triangles on black, prompts in GenEval's format for
all six tags, and a GenEval reward whose only difference from the real one is the detector.

Modules: `world` (constants), `grammar` (prompts, metadata, held-out split, tokens), `render` (scenes that
satisfy metadata), `detector` (rule-based detector and its GenEval adapter), `reward` (`shapes-geneval`).
Submodules are imported on demand so that importing the package stays cheap.
"""
