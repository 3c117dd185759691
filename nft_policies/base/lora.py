"""LoRA adapters `default` (trained) and `old` (sampling policy) on one transformer; reference = adapters off.

peft's `set_adapter` / `enable_adapters` also flip `requires_grad` (the active adapter becomes trainable,
disabling freezes all), and a parameter frozen between forward and backward silently gets no gradient.
`LoraViews` therefore re-applies the trainable set after every switch, and `use(view)` always returns
the model to the `current` view: gradient checkpointing recomputes the forward during backward with
whatever adapter is active then.

A switch talks to peft's LoRA layers directly (found once): diffusers' model-level `set_adapter` and
`disable_adapters` re-read the installed packages' metadata on every call (their peft version check),
which cost 1-4 ms a switch, several per micro-batch.
"""

from __future__ import annotations

import fnmatch
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from nft_core.errors import UserError
from nft_core.protocols import VIEWS
from nft_policies.base.options import DEFAULT_TARGET_MODULES, LoraOptions

TRAINED, OLD = "default", "old"
_ADAPTER = re.compile(r"\.lora_[A-Za-z_]+\.([^.]+)(?:\.|$)")


def adapter_of(parameter_name: str) -> str | None:
    """The adapter a LoRA parameter belongs to (`...to_q.lora_A.old.weight` -> `old`), else None."""
    match = _ADAPTER.search(parameter_name)
    return match.group(1) if match else None


def expand_targets(targets: list[str], module_names: list[str]) -> list[str]:
    """Module-name suffixes for peft: a target with `*` (a block index, e.g.
    `single_transformer_blocks.*.attn.to_out`) becomes the names it matches, as diffusers' own LoRA
    scripts list them; peft matches plain suffixes only, and a suffix shared by a module list fails."""
    expanded: list[str] = []
    for target in targets:
        if "*" not in target:
            expanded.append(target)
            continue
        patterns = (target, f"*.{target}")
        expanded += [name for name in module_names if any(fnmatch.fnmatchcase(name, p) for p in patterns)]
    return list(dict.fromkeys(expanded))


def lora_config(options: LoraOptions, module_names: list[str] | None = None):
    """The peft `LoraConfig` of the options (gaussian init: A ~ N(0, 1/r), B = 0); targets with `*` are
    expanded against `module_names`."""
    from peft import LoraConfig

    targets = list(options.target_modules or DEFAULT_TARGET_MODULES)
    return LoraConfig(
        r=options.rank,
        lora_alpha=options.alpha,
        init_lora_weights="gaussian" if options.init == "gaussian" else True,
        lora_dropout=options.dropout,
        target_modules=expand_targets(targets, module_names or []),
    )


class LoraViews:
    """Adds the two adapters to `transformer` and switches it between the three policy views."""

    def __init__(self, transformer: torch.nn.Module, options: LoraOptions) -> None:
        self.transformer = transformer
        self.config = lora_config(options, [name for name, _ in transformer.named_modules()])
        transformer.requires_grad_(False)
        try:
            transformer.add_adapter(self.config, adapter_name=TRAINED)
        except ValueError as error:  # peft: no module matches the target names
            raise UserError(
                f"policy.lora.target_modules: {options.target_modules} match no module of the transformer "
                f"({str(error).splitlines()[0][:160]})"
            ) from None
        with warnings.catch_warnings():  # peft warns that a second adapter is being added: that is the design
            warnings.filterwarnings("ignore", message=".*peft_config.*", category=UserWarning)
            transformer.add_adapter(self.config, adapter_name=OLD)
        named = dict(transformer.named_parameters())
        self.trained = {n: p for n, p in named.items() if adapter_of(n) == TRAINED}
        # keyed by the trained parameter's name, so `old[name]` is the twin of `trained[name]`
        self.old = {n: named[self.old_name(n)] for n in self.trained}
        for parameter in (*self.trained.values(), *self.old.values()):
            parameter.data = parameter.data.to(torch.float32)  # fp32 master weights under autocast
        self.sync_old()
        from peft.tuners.tuners_utils import BaseTunerLayer

        self._layers = [module for module in transformer.modules() if isinstance(module, BaseTunerLayer)]
        self.view: str | None = None
        """The view the transformer runs: its layers' adapter, or the adapter merged into its weights."""
        self._layers_view: str | None = None
        self._originals: list[tuple[torch.nn.Parameter, torch.Tensor]] = []
        """Each adapted weight and its original data while an adapter is merged in (`_kept`), else empty."""
        self._kept: tuple[tuple, list[torch.Tensor]] | None = None
        """The last merge's key and merged weights, reused while the adapter's weights stay the same."""
        self.activate("current")

    @staticmethod
    def old_name(trained_name: str) -> str:
        """`...lora_A.default.weight` -> `...lora_A.old.weight`."""
        return trained_name.replace(f".{TRAINED}.", f".{OLD}.")

    def activate(self, view: str) -> None:
        """Make `view` the active one: current = `default`, old = `old`, reference = adapters disabled; an
        adapter merged for sampling is taken out first."""
        if view not in VIEWS:
            raise ValueError(f"unknown policy view {view!r}; allowed: {', '.join(VIEWS)}")
        self.unmerge()  # a training forward must run the adapter itself (its weights get the gradient)
        self._switch_layers(view)
        self.view = view

    def _switch_layers(self, view: str) -> None:
        """Set peft's layers to `view` (what they run unmerged), unless they are set so already."""
        if view == self._layers_view:
            return
        if view == "reference":
            for layer in self._layers:
                layer.enable_adapters(False)
        else:
            adapter = TRAINED if view == "current" else OLD
            for layer in self._layers:
                if self._layers_view in (None, "reference"):
                    layer.enable_adapters(True)
                layer.set_adapter(adapter)
        for parameter in self.trained.values():
            parameter.requires_grad_(True)
        for parameter in self.old.values():
            parameter.requires_grad_(False)
        self._layers_view = view

    @contextmanager
    def use(self, view: str, merged: bool = False) -> Iterator[None]:
        """Run a block with `view` active (with `merged`, its adapter merged: a block without gradients),
        then return to `current`."""
        if merged:
            self.merge(view)
        else:
            self.activate(view)
        try:
            yield
        finally:
            self.activate("current")

    # ---- sampling with the adapter merged into the weights ------------------------------------------
    def mergeable(self) -> bool:
        """Whether every adapted layer is a plain LoRA linear (no DoRA, no LoRA bias) `merge` can fold."""
        from peft.tuners.lora.layer import Linear

        return all(
            isinstance(layer, Linear) and not layer.lora_variant and not any(layer.lora_bias.values())
            for layer in self._layers
        )

    def _versions(self, adapter: str) -> tuple:
        weights = self.trained if adapter == TRAINED else self.old
        return tuple((weight._version, weight.data_ptr()) for weight in weights.values())

    @torch.no_grad()
    def merge(self, view: str) -> None:
        """Activate `view` (current or old) with its adapter added into each adapted weight, so that a
        forward runs one linear a layer instead of three and the adapter's Python (on a CPU: 19 -> 16 ms a
        call of the tiny SD3 at batch 8). The base weights are swapped, not changed: `unmerge` (any
        switch) puts the originals back exactly. The merged weights are kept for the next merge of the same
        adapter (the old one is merged again for every no-gradient forward of an update) and recomputed
        when its weights have changed (an optimizer step, the old refresh, an EMA swap)."""
        if view not in ("current", "old"):
            raise ValueError(f"only the current or old view merges, not {view!r}")
        adapter = TRAINED if view == "current" else OLD
        key = (adapter, self._versions(adapter))
        if self.merged and self._kept is not None and self._kept[0] == key:
            return
        self.unmerge()
        if self._layers_view in (None, "reference"):  # peft's forward would unmerge a disabled layer
            self._switch_layers(view)  # the layers' own adapter does not matter while merged: no switch
        if self._kept is None or self._kept[0] != key:
            merged = [
                layer.get_base_layer().weight.data
                + layer.get_delta_weight(adapter).to(layer.get_base_layer().weight.dtype)
                for layer in self._layers
            ]
            self._kept = (key, merged)
        for layer, merged_weight in zip(self._layers, self._kept[1], strict=True):
            weight = layer.get_base_layer().weight
            self._originals.append((weight, weight.data))
            weight.data = merged_weight
            layer.merged_adapters = [adapter]  # peft's forward then runs the base layer alone
        self.view = view

    @property
    def merged(self) -> bool:
        """Whether an adapter is merged into the base weights now (the one `_kept` holds)."""
        return bool(self._originals)

    def unmerge(self, forget: bool = False) -> None:
        """Put the original base weights back (nothing to do when no adapter is merged); with `forget` drop
        the kept merged weights too (the base weights move or change)."""
        if forget:
            self._kept = None
        if not self.merged:
            return
        for weight, original in self._originals:
            weight.data = original
        for layer in self._layers:
            layer.merged_adapters = []
        self._originals.clear()

    @torch.no_grad()
    def sync_old(self) -> None:
        """`old <- default` exactly."""
        for name, parameter in self.trained.items():
            self.old[name].copy_(parameter)

    @torch.no_grad()
    def refresh(self, decay: float) -> None:
        """`old <- decay * old + (1 - decay) * default` over the LoRA weights."""
        for name, parameter in self.trained.items():
            self.old[name].lerp_(parameter.to(self.old[name].dtype), 1.0 - decay)

    def metadata(self) -> dict[str, Any]:
        """The adapter config diffusers stores next to the weights (rank and alpha survive loading)."""
        config = self.config.to_dict()
        config["target_modules"] = sorted(config["target_modules"])
        return config

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The trained adapter in peft's naming without the adapter name (what diffusers saves)."""
        from peft.utils import get_peft_model_state_dict

        state = get_peft_model_state_dict(self.transformer, adapter_name=TRAINED)
        return {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in state.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor], source: str) -> None:
        """Load a trained adapter (peft naming, no adapter name) into `default` and `old`."""
        from peft.utils import set_peft_model_state_dict

        expected = {name.replace(f".{TRAINED}.", "."): name for name in self.trained}
        unknown = sorted(set(state) - set(expected))
        missing = sorted(set(expected) - set(state))
        if unknown or missing:
            detail = f"unexpected {unknown[:3]}" if unknown else f"missing {missing[:3]}"
            raise UserError(f"{source}: LoRA does not match this policy's target modules ({detail})")
        for key, value in state.items():
            shape = tuple(self.trained[expected[key]].shape)
            if tuple(value.shape) != shape:
                raise UserError(
                    f"{source}: LoRA tensor {key} has shape {tuple(value.shape)}, this policy's is {shape} "
                    "(different rank?)"
                )
        self.unmerge(forget=True)
        set_peft_model_state_dict(self.transformer, state, adapter_name=TRAINED)
        self.sync_old()
        self._layers_view = None  # peft may have switched its layers: set them again
        self.activate("current")


__all__ = ["OLD", "TRAINED", "LoraViews", "adapter_of", "expand_targets", "lora_config"]
