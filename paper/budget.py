"""How much work a paper build does: one frozen Budget per `--budget` name.

`small` fits a 2-core CPU in well under 30 minutes (tiny models, one clip per duration bucket, 100
iterations); `full` is the original experiments' scale (full models, 1000 iterations, up to 100 clips per
bucket) and wants GPUs; `tiny-test` is the miniature the tests run in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

from recon_core.config import PresetName

#: the original scripts' duration buckets, in ms: [min, max)
DURATION_BUCKETS: tuple[tuple[int, int], ...] = ((0, 1000), (1000, 2000), (2000, 3000), (3000, 4000))
#: the bucket the original lr and top-grad tables used (100 clips of 1-2 s)
MAIN_BUCKET = (1000, 2000)


@dataclass(frozen=True)
class Budget:
    """Everything that scales the work; seeds are fixed here so that a rerun gives the same numbers."""

    name: str
    preset: PresetName  # model size of the sweeps and studies
    max_iter: int  # attack iterations per clip in the sweeps
    n_seeds: int  # restarts per clip (a sweep's std is over clips and restarts)
    clips_per_bucket: int
    study_trials: int | None  # None: the spec's own n_trials, data and iterations (the spec unchanged)
    cost_presets: tuple[PresetName, ...]
    cost_iters: tuple[tuple[PresetName, int], ...]  # iterations measured per preset
    cost_buckets: int  # duration buckets (first clip of each) the cost is measured on
    target_ratio: float  # the mae_ratio whose first crossing the cost table reports
    wav_pairs: int  # true/reconstructed WAV pairs copied for listening
    seed: int = 0

    def iterations_for(self, preset: str) -> int:
        return dict(self.cost_iters)[preset]


BUDGETS: dict[str, Budget] = {
    "small": Budget("small", "tiny", 100, 2, 1, 6, ("tiny", "full"), (("tiny", 60), ("full", 2)), 4, 0.95, 3),
    "full": Budget("full", "full", 1000, 4, 100, None, ("tiny", "full"), (("tiny", 1000), ("full", 20)), 4, 0.8, 6),
    "tiny-test": Budget("tiny-test", "tiny", 2, 1, 1, 2, ("tiny",), (("tiny", 2),), 1, 0.99, 1),
}
