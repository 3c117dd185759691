"""The conformance kit: built-in rewards and solvers pass it, and it catches each kind of broken plugin."""

from __future__ import annotations

from itertools import pairwise
from typing import ClassVar

import pytest
import torch

import nft_rewards
import nft_solvers
from nft_core.testing import ConformanceError, check_policy, check_reward, check_solver, point_mass_velocity
from nft_core.types import Aggregate, RewardOutput
from nft_shapes import grammar
from nft_shapes.render import render_batch
from nft_shapes.reward import shapes_geneval
from nft_solvers.base import GridSolver
from nft_solvers.grids import grid_times

# ---- built-ins pass ----------------------------------------------------------------------------------


def test_shapes_geneval_keeps_the_reward_contract():
    items = grammar.eval_items(1)[::8]  # 8 prompts over all tags
    metadata = [item.metadata for item in items]
    # half the images show their own prompt, half another prompt's scene: scores vary, pairing matters
    images = render_batch(metadata[:4] + metadata[5:] + metadata[4:5], seed=0)
    output = check_reward(shapes_geneval(batch_size=3), images, [i.prompt for i in items], metadata)
    assert output.scores[:4].tolist() == [1.0] * 4 and output.scores[4:].min() < 1.0


@pytest.mark.parametrize("name", ["jpeg-compressibility", "jpeg-incompressibility"])
def test_jpeg_rewards_keep_the_reward_contract(name):
    check_reward(nft_rewards.load(name, batch_size=3))


@pytest.mark.parametrize(
    ("name", "options", "kit"),
    [
        ("euler", {"steps": 6}, {"stochastic": False}),
        ("heun", {"steps": 5, "shift": 3.0}, {"stochastic": False}),
        ("dpm2", {"steps": 6}, {"stochastic": False}),
        ("flow-sde", {"steps": 6}, {"stochastic": True}),
        ("flow-sde", {"steps": 6, "noise_level": 0.0}, {"stochastic": False}),
        ("diffusers", {"steps": 6}, {"stochastic": False}),
        ("diffusers", {"steps": 6, "scheduler": "DPMSolverMultistepScheduler"}, {"custom_grid": False}),
    ],
    ids=["euler", "heun", "dpm2", "flow-sde", "flow-sde-0", "diffusers-euler", "diffusers-dpm"],
)
def test_builtin_solvers_keep_the_solver_contract(name, options, kit):
    check_solver(nft_solvers.load(name, **options), **kit)


# ---- broken rewards are caught -----------------------------------------------------------------------


class MeanReward:
    """A well-behaved reward: the mean pixel plus a prompt-dependent offset."""

    name = "mean"
    native_range = (0.0, 2.0)
    higher_is_better = True
    deterministic = True

    def to(self, device):
        return self

    def aggregate(self, output, prompts, metadata=None):
        return Aggregate.mean(output)

    def scores(self, images, prompts):
        return images.float().mean(dim=(1, 2, 3)) + torch.tensor([len(p) % 7 / 7 for p in prompts])

    def __call__(self, images, prompts, metadata=None):
        if len(prompts) != images.shape[0]:
            raise ValueError("one prompt per image")
        return RewardOutput(scores=self.scores(images, prompts))


class WrongShape(MeanReward):
    def __call__(self, images, prompts, metadata=None):
        return RewardOutput(scores=super().__call__(images, prompts).scores[:, None])


class NotAnOutput(MeanReward):
    def __call__(self, images, prompts, metadata=None):
        return super().__call__(images, prompts).scores.tolist()


class BatchStatistics(MeanReward):
    def scores(self, images, prompts):
        raw = super().scores(images, prompts)
        return (raw - raw.mean()).clamp(0, 2)


class CrossProduct(MeanReward):
    def scores(self, images, prompts):  # every image against every prompt, averaged
        offsets = torch.tensor([len(p) % 7 / 7 for p in prompts])
        return images.float().mean(dim=(1, 2, 3)) + offsets.mean()


class OutOfRange(MeanReward):
    native_range = (0.0, 0.5)


class NoDirection(MeanReward):
    higher_is_better = "yes"


class EmptyRange(MeanReward):
    native_range = (1.0, 1.0)


class ToReturnsNone(MeanReward):
    def to(self, device):
        return None


class Noisy(MeanReward):
    def scores(self, images, prompts):
        return super().scores(images, prompts) + 0.01 * torch.rand(len(prompts))


class MutatesInput(MeanReward):
    def scores(self, images, prompts):
        result = super().scores(images, prompts)
        images.mul_(0.5)
        return result


class Broadcasts(MeanReward):
    def __call__(self, images, prompts, metadata=None):
        return RewardOutput(scores=images.float().mean(dim=(1, 2, 3)))


class HalfPrecisionDrift(MeanReward):
    def scores(self, images, prompts):
        return super().scores(images, prompts) + (0.05 if images.dtype == torch.float16 else 0.0)


class RefusesHalf(MeanReward):
    def scores(self, images, prompts):
        if images.dtype != torch.float32:
            raise TypeError("float32 only")
        return super().scores(images, prompts)


class KeepsGraph(MeanReward):
    def scores(self, images, prompts):
        return super().scores(images, prompts) * torch.ones((), requires_grad=True)


class NaNScores(MeanReward):
    def scores(self, images, prompts):
        return super().scores(images, prompts) * float("nan")


class NoDeterminism(MeanReward):
    deterministic = None


class AggregatesToText(MeanReward):
    def aggregate(self, output, prompts, metadata=None):
        return "fine"


class AggregatesToNaN(MeanReward):
    def aggregate(self, output, prompts, metadata=None):
        return Aggregate(score=float("nan"))


class WrongDetails(MeanReward):
    def __call__(self, images, prompts, metadata=None):
        scores = super().scores(images, prompts)
        return RewardOutput(scores=scores, details={"parts": torch.zeros(len(prompts), 2)})


def test_the_well_behaved_reward_passes():
    check_reward(MeanReward())


@pytest.mark.parametrize(
    ("reward", "message"),
    [
        (WrongShape(), r"scores must have shape \[4\] \(one per image\), got \(4, 1\)"),
        (NotAnOutput(), "must return a RewardOutput with a tensor `scores`, got list"),
        (BatchStatistics(), r"batching changes scores: item \d scores [0-9.]+ alone but"),
        (CrossProduct(), "batching changes scores"),
        (OutOfRange(), r"scores outside the declared native_range \(0.0, 0.5\)"),
        (NoDirection(), "needs a bool attribute `higher_is_better`"),
        (EmptyRange(), r"native_range \(1.0, 1.0\) is empty"),
        (ToReturnsNone(), r"\.to\('cpu'\) must return the reward"),
        (Noisy(), "the same batch scored differently on a second call"),
        (MutatesInput(), "modified the input images in place"),
        (Broadcasts(), "accepted 4 images with 3 prompts"),
        (HalfPrecisionDrift(), "float16 images scored differently"),
        (RefusesHalf(), "a float16 batch: raised TypeError: float32 only"),
        (KeepsGraph(), "scores require grad"),
        (NaNScores(), "scores must be finite"),
        (WrongDetails(), r"details\['parts'\] must have shape \[4\], got \(4, 2\)"),
        (NoDeterminism(), "needs a bool attribute `deterministic`"),
        (AggregatesToText(), "aggregate\\(\\) must return an nft_core.types.Aggregate, got str"),
        (AggregatesToNaN(), "aggregate\\(\\) must give a finite float score, got nan"),
    ],
    ids=lambda value: type(value).__name__ if not isinstance(value, str) else "",
)
def test_broken_rewards_are_caught_with_a_message(reward, message):
    with pytest.raises(ConformanceError, match=message) as error:
        check_reward(reward)
    assert str(error.value).startswith("reward 'mean': ")


def test_a_stochastic_reward_may_opt_out_of_repeatability():
    check_reward(Noisy(), deterministic=False)


# ---- broken solvers are caught -----------------------------------------------------------------------


class Euler(GridSolver):
    name = "test-euler"

    def integrate(self, velocity, x, times, generator):
        for t, t_next in pairwise(times):
            x = x + (t_next - t) * velocity(x, t)
        return x


class WrongSign(Euler):
    def integrate(self, velocity, x, times, generator):
        for t, t_next in pairwise(times):
            x = x - (t_next - t) * velocity(x, t)
        return x


class KeepsFloat32(Euler):
    def sample(self, velocity, noise, grid=None, cond=None, generator=None):
        return super().sample(velocity, noise, grid, cond, generator).float()


class NeverCalls(Euler):
    def integrate(self, velocity, x, times, generator):
        return torch.zeros_like(x)


class GlobalNoise(Euler):
    def integrate(self, velocity, x, times, generator):
        return super().integrate(velocity, x, times, generator) + 0 * torch.randn(x.shape)


class Unseeded(Euler):
    def integrate(self, velocity, x, times, generator):
        own = torch.Generator()
        own.seed()  # ignores the caller's generator
        for t, t_next in pairwise(times):
            x = x + (t_next - t) * velocity(x, t)
            if t_next > 0:  # the last step lands on x0 for the point-mass field whatever x is
                x = x + 0.01 * torch.randn(x.shape, generator=own, dtype=x.dtype)
        return x


class IncreasingGrid(Euler):
    def default_grid(self):
        return torch.linspace(0, 1, self.steps + 1, dtype=torch.float64)


class IgnoresGrid(Euler):
    def sample(self, velocity, noise, grid=None, cond=None, generator=None):
        if grid is not None:
            grid_times(grid)  # validated, then ignored
        return super().sample(velocity, noise, None, cond, generator)


class ScalarTime:
    name = "scalar-time"
    stochastic = False

    def default_grid(self):
        return torch.tensor([1.0, 0.5, 0.0], dtype=torch.float64)

    def sample(self, velocity, noise, grid=None, cond=None, generator=None):
        x = noise
        times = [1.0, 0.5, 0.0] if grid is None else grid.tolist()
        for t, t_next in pairwise(times):
            x = x + (t_next - t) * velocity(x, t, cond)
        return x


class DropsCond(Euler):
    def sample(self, velocity, noise, grid=None, cond=None, generator=None):
        return super().sample(velocity, noise, grid, None, generator)


class BatchNormalized(Euler):
    def integrate(self, velocity, x, times, generator):
        return super().integrate(velocity, x / x.std() if x.shape[0] > 1 else x, times, generator)


class AcceptsAnyGrid(Euler):
    def sample(self, velocity, noise, grid=None, cond=None, generator=None):
        if grid is not None and float(grid[0]) < float(grid[-1]):
            grid = None
        return super().sample(velocity, noise, grid, cond, generator)


class DeclaredStochastic(Euler):
    stochastic: ClassVar[bool] = True


def test_the_well_behaved_solver_passes():
    check_solver(Euler(steps=4), stochastic=False)


def test_the_point_mass_field_is_exact_for_euler_and_its_velocity_is_affine():
    noise = torch.randn(2, 3, generator=torch.Generator().manual_seed(0))
    x0 = torch.ones(2, 3)
    velocity = point_mass_velocity(x0, noise)
    t = torch.full((2,), 0.3)
    assert torch.allclose(velocity(0.3 * noise + 0.7 * x0, t), noise - x0, atol=1e-6)
    assert torch.allclose(Euler(steps=1).sample(velocity, noise), x0, atol=1e-6)


@pytest.mark.parametrize(
    ("solver", "message"),
    [
        (WrongSign(steps=4), "on the point-mass field .* misses x0"),
        (KeepsFloat32(steps=4), "returned torch.float32, want the noise's torch.float16"),
        (NeverCalls(steps=4), "never called the velocity function"),
        (GlobalNoise(steps=4), "drew from torch's global RNG although a generator was given"),
        (Unseeded(steps=4), "the same seeded generator gave different samples"),
        (IncreasingGrid(steps=4), "default_grid\\(\\) must strictly decrease"),
        (IgnoresGrid(steps=4), "the grid argument is ignored"),
        (ScalarTime(), r"velocity got t = 1.0; want a float tensor of shape \[3\]"),
        (DropsCond(steps=4), "velocity must receive the `cond` given to sample"),
        (BatchNormalized(steps=4), "batching changes samples: row 0 alone"),
        (AcceptsAnyGrid(steps=4), r"accepted the increasing grid \[0, 0.5, 1\]"),
        (DeclaredStochastic(steps=4), "is declared stochastic but another generator seed left the sample"),
    ],
    ids=lambda value: type(value).__name__ if not isinstance(value, str) else "",
)
def test_broken_solvers_are_caught_with_a_message(solver, message):
    with pytest.raises(ConformanceError, match=message) as error:
        check_solver(solver)
    assert str(error.value).startswith("solver '")


def test_a_solver_refusing_a_valid_grid_is_told_about_custom_grid():
    solver = nft_solvers.load("diffusers", steps=4, scheduler="DPMSolverMultistepScheduler")
    with pytest.raises(ConformanceError, match="pass custom_grid=False if the solver takes no grid"):
        check_solver(solver)


class NoStochasticDeclaration:
    name = "undeclared"

    def default_grid(self):
        return torch.tensor([1.0, 0.0], dtype=torch.float64)

    def sample(self, velocity, noise, grid=None, cond=None, generator=None):
        return noise - velocity(noise, torch.ones(noise.shape[0]), cond)


def test_a_solver_must_declare_whether_it_is_stochastic():
    with pytest.raises(ConformanceError, match="needs a bool attribute `stochastic`"):
        check_solver(NoStochasticDeclaration())


# ---- policies --------------------------------------------------------------------------------------------


def shapes_policy(tiny_checkpoint, cls=None):
    from nft_shapes.policy import ShapesTinyPolicy

    return (cls or ShapesTinyPolicy)(str(tiny_checkpoint))


def test_shapes_tiny_keeps_the_policy_contract(tiny_checkpoint, tmp_path):
    check_policy(shapes_policy(tiny_checkpoint), tmp_path / "saved")


def test_the_shipped_shapes_tiny_keeps_the_policy_contract(tmp_path):
    from nft_shapes.policy import ShapesTinyPolicy

    check_policy(ShapesTinyPolicy(), tmp_path / "saved")


def broken_policies():
    from nft_shapes.policy import ShapesTinyPolicy

    class TrainReturnsNone(ShapesTinyPolicy):
        def train(self, mode=True):
            super().train(mode)

    class RefreshIgnoresDecay(ShapesTinyPolicy):
        def refresh_old(self, decay):
            super().refresh_old(0.0)

    class LoadSkipsOld(ShapesTinyPolicy):
        def load_trainable(self, directory):
            state = {k: v.clone() for k, v in self.old_model.state_dict().items()}
            super().load_trainable(directory)
            self.old_model.load_state_dict(state)

    class ReferenceIsCurrent(ShapesTinyPolicy):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.reference_model = self.model

    class AnyViewIsCurrent(ShapesTinyPolicy):
        def _network(self, view):
            return super()._network(view if view in ("old", "reference") else "current")

    class DecodesToMinusOneOne(ShapesTinyPolicy):
        def decode(self, latents):
            return latents.clamp(-1, 1)

    return [
        (TrainReturnsNone, r"train\(False\) must return the policy"),
        (RefreshIgnoresDecay, r"refresh_old\(1.0\) changed the old view"),
        (LoadSkipsOld, r"after load_trainable, velocity\('old'\) differs from the saved weights'"),
        (ReferenceIsCurrent, r"velocity\('reference'\) requires grad; only the current view is trained"),
        (AnyViewIsCurrent, r"velocity\('nonsense'\) did not raise"),
        (DecodesToMinusOneOne, r"decode must return float images in \[0, 1\]"),
    ]


@pytest.mark.parametrize("index", range(6))
def test_broken_policies_are_caught_with_a_message(tiny_checkpoint, tmp_path, index):
    cls, message = broken_policies()[index]
    with pytest.raises(ConformanceError, match=message) as error:
        check_policy(shapes_policy(tiny_checkpoint, cls), tmp_path / "saved")
    assert str(error.value).startswith("policy 'shapes-tiny': ")
