"""FOCUS keyframe selection (arXiv 2510.27280): the few frames of a long video that answer a query.

Why a bandit: scoring every frame of an hour against a query costs minutes even on a GPU; FOCUS
treats equal clips of the video as the arms of a combinatorial pure-exploration bandit, scores a
few frames per arm (coarse stage), zooms into the arms whose empirical-Bernstein upper bound is
highest (fine stage, ~1 fps), and picks k frames from the best-scored frames and the best arms.
It needs < 2 % of the frames scored. The authors' release computes the fine stage but never
scores it; here it is scored, and the final arm ranking uses those scores (see ``_rank_bound``).

Two layers: :class:`FocusSelector` is the pure algorithm over a frame grid, driven by any
``score_fn(times) -> scores`` (tests give it synthetic rewards); :func:`select_frames` is the job
that probes a file, fetches frames by seeking (``VideoDecoder.frame_at``, never a full decode),
scores them with a scorer from :mod:`core.focus.scorers` and returns a :class:`FocusResult`.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from core.errors import KestrelError
from core.jobs import JobState, Throttle, check, set_media_span

ARM_SECONDS = 16.0  # the release's clip length: A = max(8, ceil(duration / 16 s))
MIN_ARMS = 8
MIN_ARM_SECONDS = 2.0  # a video shorter than one arm is split into arms at least this long
TOP_SHARE = 0.2  # share of k taken as the best-scored frames anywhere
MIN_BUDGET = 8  # a share-based budget never goes below this (short videos)
VAR_FLOOR = 1e-6
POLICIES = ("bernstein", "greedy", "random")  # greedy and random exist for ablations only

ScoreFn = Callable[[list[float]], Sequence[float | None]]


class FocusError(KestrelError):
    """A selection cannot be made; str() is a sentence for the analyst."""


@dataclass(frozen=True)
class ArmStat:
    """One arm (clip) of the bandit: what the heatmap draws. ``mean`` is NaN before any score;
    ``ucb`` is the empirical-Bernstein bound with the arm's own pull count (inf when unpulled);
    ``rank`` is the bound at the coarse pull count, which orders the arms for the final pick."""

    index: int
    start: float
    end: float
    mean: float
    ucb: float
    rank: float
    n: int


@dataclass(frozen=True)
class ChosenFrame:
    time: float
    score: float  # the frame's own score, or the nearest scored neighbour's when ``scored`` is False
    arm: int
    scored: bool
    reason: str  # "top": among the best-scored frames anywhere; "arm": sampled inside a top arm


@dataclass(frozen=True)
class FocusPartial:
    """A snapshot after each scored batch, so the view can fill the heatmap as the job runs."""

    stage: str  # "coarse" | "fine"
    arms: tuple[ArmStat, ...]
    new_scores: tuple[tuple[float, float], ...]
    frames_scored: int
    budget: int


@dataclass(frozen=True)
class Selection:
    """What :meth:`FocusSelector.run` returns."""

    frames: tuple[ChosenFrame, ...]
    arms: tuple[ArmStat, ...]
    scored: tuple[tuple[float, float], ...]  # (time, score), sorted by time
    attempts: int  # frames handed to score_fn (≤ budget), failed ones included
    failed: int  # frames that came back without a score
    coarse_pulls: int
    fine_pulls: int
    budget: int
    total_frames: int
    warnings: tuple[str, ...]


def bernstein_bound(mean: np.ndarray, var: np.ndarray, n: np.ndarray, total: float) -> np.ndarray:
    """U_i = mu_i + sqrt(2 sigma_i^2 ln N / n_i) + 3 ln N / n_i, sigma^2 floored; inf where n_i = 0."""
    ln = math.log(max(total, 1.0))
    n = np.asarray(n, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        u = mean + np.sqrt(2.0 * np.maximum(var, VAR_FLOOR) * ln / n) + 3.0 * ln / n
    return np.where(n > 0, u, np.inf)


class FocusSelector:
    """The FOCUS bandit over the frame grid ``j / fps`` of a video ``duration`` seconds long.

    ``budget`` caps the frames handed to ``score_fn`` (failed ones count: they cost compute).
    ``rng`` (a numpy Generator) makes every random choice, so a seed reproduces a selection.
    ``on_batch(stage, selector, new_scores)`` is called after every scored batch; ``check()`` before
    each (it raises to cancel). ``policy`` other than "bernstein" is for ablation tests only.
    """

    def __init__(self, duration: float, fps: float, budget: int, rng: np.random.Generator, *, k: int = 16,
                 arms: int | None = None, coarse_per_arm: int = 3, fine_fps: float = 1.0,
                 temperature: float = 0.06, top_share: float = TOP_SHARE, batch_size: int = 8,
                 policy: str = "bernstein", check: Callable[[], None] | None = None,
                 on_batch: Callable[[str, "FocusSelector", list[tuple[float, float]]], None] | None = None) -> None:
        if not (0 < duration < math.inf and 0 < fps < math.inf) or policy not in POLICIES:
            raise ValueError(f"duration and fps must be positive (got {duration}, {fps}); policy one of {POLICIES}")
        if min(budget, k, coarse_per_arm, batch_size, 1 if arms is None else arms) < 1 or min(fine_fps, temperature) <= 0:
            raise ValueError("budget, k, arms, coarse_per_arm and batch_size must be ≥ 1; fine_fps and temperature > 0")
        self.duration, self.fps, self.rng = float(duration), float(fps), rng
        self.n_frames = max(1, int(math.floor(duration * fps + 1e-6)))
        self.warnings: list[str] = []
        self.budget = min(int(budget), self.n_frames)
        self.k = min(int(k), self.n_frames)
        if k > self.n_frames:
            self.warnings.append(f"k = {k} is more than the video's {self.n_frames} frames: choosing {self.n_frames}.")
        n_arms = int(arms) if arms is not None else max(MIN_ARMS, math.ceil(duration / ARM_SECONDS))
        if arms is None and duration < ARM_SECONDS:
            n_arms = int(min(MIN_ARMS, max(1, math.floor(duration / MIN_ARM_SECONDS))))
            self.warnings.append(f"The video ({duration:.1f} s) is shorter than one {ARM_SECONDS:.0f} s arm: "
                                 f"using {n_arms} arm{'s' * (n_arms > 1)} of {duration / n_arms:.1f} s.")
        if n_arms > self.n_frames:
            self.warnings.append(f"{n_arms} arms for {self.n_frames} frames: using {self.n_frames} arms.")
            n_arms = self.n_frames
        self.coarse_per_arm = int(coarse_per_arm)
        if self.budget < n_arms * self.coarse_per_arm:
            cpa = max(1, self.budget // n_arms)
            if cpa < self.coarse_per_arm:
                self.warnings.append(f"The budget ({self.budget} frames) cannot pay {self.coarse_per_arm} coarse "
                                     f"pulls in each of {n_arms} arms: using {cpa} per arm.")
                self.coarse_per_arm = cpa
            if self.budget < n_arms:
                self.warnings.append(f"The budget ({self.budget} frames) is below one pull per arm: "
                                     f"merging {n_arms} arms into {self.budget}.")
                n_arms = self.budget
        self.n_arms = n_arms
        self.edges = np.floor(np.arange(n_arms + 1) * self.n_frames / n_arms + 1e-9).astype(np.int64)
        self.fine_step = max(1, int(round(self.fps / fine_fps)))
        self.temperature, self.top_share, self.batch_size = float(temperature), float(top_share), int(batch_size)
        self.policy, self._check, self._on_batch = policy, check, on_batch
        self.tried: dict[int, float | None] = {}  # frame index -> score (None: no score)
        self._arm_tried: list[list[int]] = [[] for _ in range(n_arms)]
        self._sum, self._sq, self._n = np.zeros(n_arms), np.zeros(n_arms), np.zeros(n_arms, np.int64)
        self.attempts, self.failed, self.pulls, self.stage = 0, 0, {"coarse": 0, "fine": 0}, "coarse"
        self._fill = True
        self.active: list[int] = list(range(n_arms))  # the arms the bandit may pull and pick from
        self.preferred: dict[int, list[int]] = {}  # arm -> frames its coarse stage takes first

    def restrict(self, arms: Sequence[int], preferred: Sequence[int] = (), fill: bool = True) -> None:
        """Pull and pick only in ``arms`` (a shortlist from a first stage, e.g. the media index).
        The coarse stage of each takes the ``preferred`` frames inside it (frames whose score is
        known cheaply) and, with ``fill``, random others up to ``coarse_per_arm``; without ``fill``,
        an arm gets a centre frame only when no preferred frame lies in it."""
        self.active = sorted({int(a) for a in arms if 0 <= int(a) < self.n_arms})
        if not self.active:
            raise ValueError("restrict() needs at least one arm")
        self.preferred = {}
        for j in sorted({int(j) for j in preferred if 0 <= int(j) < self.n_frames}):
            self.preferred.setdefault(self._arm_of(j), []).append(j)
        self._fill = bool(fill)

    # -- statistics ------------------------------------------------------------------------
    def _mean_var(self) -> tuple[np.ndarray, np.ndarray]:
        n = np.maximum(self._n, 1)
        mean = self._sum / n
        return np.where(self._n > 0, mean, np.nan), np.maximum(self._sq / n - mean ** 2, 0.0)

    def ucb(self, extra: np.ndarray | None = None) -> np.ndarray:
        """The empirical-Bernstein upper bound per arm; ``extra`` adds virtual pulls (batch allocation)."""
        mean, var = self._mean_var()
        extra = np.zeros(self.n_arms) if extra is None else extra
        return bernstein_bound(np.nan_to_num(mean), var, self._n + extra, float(self._n.sum() + extra.sum()))

    def _rank_bound(self) -> np.ndarray:
        """U evaluated at the coarse pull count for every arm: the release's ranking (it ranks after
        equal pulls), fed with the fine stage's better estimates. The raw U would rank the least
        explored arms first once pulls are unequal (its 3 ln N / n term alone is ~7 for n = 3 and
        ~1 for n = 19), sending the final picks where there is least evidence."""
        mean, var = self._mean_var()
        c = np.full(self.n_arms, float(self.coarse_per_arm))
        u = bernstein_bound(np.nan_to_num(mean), var, c, float(self._n.sum()))
        return np.where(self._n > 0, u, -np.inf)

    def arm_stats(self) -> tuple[ArmStat, ...]:
        mean, _ = self._mean_var()
        u, r = self.ucb(), self._rank_bound()
        t = self.edges / self.fps
        return tuple(ArmStat(i, float(t[i]), float(min(t[i + 1], self.duration)), float(mean[i]), float(u[i]),
                             float(r[i]), int(self._n[i])) for i in range(self.n_arms))

    def _arm_of(self, j: int) -> int:
        return int(np.searchsorted(self.edges, j, side="right") - 1)

    # -- scoring ---------------------------------------------------------------------------
    def _score(self, indices: list[int], score_fn: ScoreFn) -> None:
        if self._check is not None:
            self._check()
        indices = sorted(indices)  # time order: the decoder can often decode forward instead of seeking
        times = [j / self.fps for j in indices]
        vals = list(score_fn(times))
        if len(vals) != len(indices):
            raise FocusError(f"The scorer returned {len(vals)} scores for {len(indices)} frames.")
        new = []
        for j, v in zip(indices, vals):
            arm = self._arm_of(j)
            self._arm_tried[arm].append(j)
            v = None if v is None or not math.isfinite(float(v)) else min(1.0, max(0.0, float(v)))
            self.tried[j] = v
            if v is None:
                self.failed += 1
                continue
            self._sum[arm], self._sq[arm], self._n[arm] = self._sum[arm] + v, self._sq[arm] + v * v, self._n[arm] + 1
            new.append((j / self.fps, v))
        self.attempts += len(indices)
        self.pulls[self.stage] += len(indices)
        if self._n.sum() == 0 and self.attempts >= min(self.budget, 2 * self.batch_size):
            raise FocusError(f"The scorer gave no score for any of the {self.attempts} frames tried.")
        if self._on_batch is not None:
            self._on_batch(self.stage, self, new)

    def _coarse(self, score_fn: ScoreFn) -> None:
        """Centre + (coarse_per_arm - 1) random other frames of every arm."""
        todo: list[int] = []
        for i in self.active:
            lo, hi = int(self.edges[i]), int(self.edges[i + 1])
            pref = self.preferred.get(i, [])
            if pref:
                todo += pref
                if not self._fill:
                    continue
                taken = set(pref)
                left = [j for j in range(lo, hi) if j not in taken]
                m = min(self.coarse_per_arm - len(pref), len(left))
                todo += [int(x) for x in self.rng.choice(left, size=m, replace=False)] if m > 0 else []
                continue
            centre = (lo + hi - 1) // 2
            m = min(self.coarse_per_arm - 1, hi - lo - 1)
            extra = lo + self.rng.choice(hi - lo - 1, size=m, replace=False) if m > 0 else np.zeros(0, np.int64)
            extra = np.where(extra >= centre, extra + 1, extra)
            todo += [centre, *(int(x) for x in extra)]
        for i in range(0, len(todo), self.batch_size):
            self._score(todo[i:i + self.batch_size], score_fn)

    def _fine_candidates(self, arm: int) -> list[int]:
        lo, hi = int(self.edges[arm]), int(self.edges[arm + 1])
        grid = range(lo + min(self.fine_step // 2, hi - lo - 1), hi, self.fine_step)
        return [j for j in grid if j not in self.tried]

    def _farthest(self, arm: int, cands: list[int], reserved: set[int]) -> int:
        """The fine candidate farthest from every frame already scored (or reserved) in the arm:
        the arm is covered coarse-to-fine, so a stopped job still has an even sample."""
        seen = np.asarray(self._arm_tried[arm] + [j for j in reserved if self._arm_of(j) == arm], float)
        if len(seen) == 0:
            return cands[len(cands) // 2]
        d = np.abs(np.asarray(cands, float)[:, None] - seen[None, :]).min(axis=1)
        return cands[int(np.argmax(d))]

    def _ordering(self, value: np.ndarray) -> list[int]:
        if self.policy == "random":
            return [int(i) for i in self.rng.permutation(self.n_arms)]
        return [int(i) for i in np.lexsort((np.arange(self.n_arms), -value))]

    def _fine(self, score_fn: ScoreFn) -> None:
        """Zoom into the most promising arms (by U after the coarse stage) at ``fine_fps``: as many arms
        as the remaining budget covers; each pull goes to the zoomed arm with the highest U, updated
        after every batch (a batch is allocated with virtual pulls)."""
        self.stage = "fine"
        mean, _ = self._mean_var()
        ranking = self._ordering(np.nan_to_num(mean, nan=-1.0) if self.policy == "greedy" else self.ucb())
        live_arms = set(self.active)
        ranking = [a for a in ranking if a in live_arms]
        cands = {a: self._fine_candidates(a) for a in range(self.n_arms)}
        zoom: list[int] = []
        for a in ranking:
            if sum(len(cands[z]) for z in zoom) >= self.budget - self.attempts:
                break
            zoom += [a] if cands[a] else []
        while self.attempts < self.budget:
            batch: list[int] = []
            extra = np.zeros(self.n_arms)
            for _ in range(min(self.batch_size, self.budget - self.attempts)):
                live = [a for a in zoom if cands[a]]
                if not live:
                    break
                if self.policy == "random":
                    arm = live[int(self.rng.integers(len(live)))]
                else:
                    value = self.ucb(extra) if self.policy == "bernstein" else np.nan_to_num(self._mean_var()[0])
                    arm = max(live, key=lambda a: (value[a], -a))
                j = self._farthest(arm, cands[arm], set(batch))
                cands[arm].remove(j)
                batch.append(j)
                extra[arm] += 1
            if not batch:
                break
            self._score(batch, score_fn)

    # -- final pick ------------------------------------------------------------------------
    def _pick(self) -> list[ChosenFrame]:
        scored = {j: v for j, v in self.tried.items() if v is not None}
        if not scored:
            raise FocusError("No frame could be scored, so there is nothing to choose from.")
        k = self.k
        gap = min(1.0, 0.25 * self.duration / k)  # seconds
        g = max(1, int(math.ceil(gap * self.fps - 1e-9)))
        blocked = np.zeros(self.n_frames, bool)
        picks: list[ChosenFrame] = []

        def take(j: int, score: float, is_scored: bool, reason: str) -> None:
            picks.append(ChosenFrame(j / self.fps, float(score), self._arm_of(j), is_scored, reason))
            blocked[max(0, j - g + 1):j + g] = True

        k_top = min(k, max(1, int(round(self.top_share * k))))
        best_first = sorted(scored, key=lambda j: (-scored[j], j))
        for j in best_first:
            if len(picks) < k_top and not blocked[j]:
                take(j, scored[j], True, "top")
        rank = self._rank_bound()
        order = self._ordering(np.nan_to_num(self._mean_var()[0], nan=-1.0) if self.policy == "greedy" else rank)
        live_arms = set(self.active)
        order = [a for a in order if a in live_arms]
        order = [a for a in order if self._n[a] > 0] + [a for a in order if self._n[a] == 0]
        s = min(len(order), min(32, max(4, math.ceil(0.25 * self.n_arms))))
        left = k - len(picks)
        quota = [left // s + (1 if i < left % s else 0) for i in range(s)]
        carry = 0
        for pos, arm in enumerate(order):
            want = (quota[pos] if pos < s else 0) + carry
            if want > 0:
                carry = want - self._sample_arm(arm, want, scored, blocked, take)
        if len(picks) < k:  # everything eligible is blocked: fill with the best remaining scores
            taken = {int(round(p.time * self.fps)) for p in picks}
            for j in [j for j in best_first if j not in taken][:k - len(picks)]:
                take(j, scored[j], True, "top")
            if len(picks) < k:
                self.warnings.append(f"Only {len(picks)} frames could be chosen {gap:.2f} s apart (k = {k}).")
        return sorted(picks, key=lambda p: p.time)

    def _sample_arm(self, arm: int, want: int, scored: dict[int, float], blocked: np.ndarray,
                    take: Callable[[int, float, bool, str], None]) -> int:
        """Softmax sampling without replacement inside one arm; unscored frames inherit the nearest
        scored neighbour's score; scores are min-max normalised in the arm."""
        lo, hi = int(self.edges[arm]), int(self.edges[arm + 1])
        cand = np.arange(lo, hi, max(1, (hi - lo) // 4000))
        own = sorted(j for j in self._arm_tried[arm] if scored.get(j) is not None)
        if own:
            s_idx = np.asarray(own)
            s_val = np.asarray([scored[j] for j in own])
            pos = np.searchsorted(s_idx, cand)
            left, right = np.clip(pos - 1, 0, len(s_idx) - 1), np.clip(pos, 0, len(s_idx) - 1)
            near = np.where(np.abs(cand - s_idx[left]) <= np.abs(s_idx[right] - cand), left, right)
            inherit = s_val[near]
        else:
            inherit = np.zeros(len(cand))
        span = inherit.max() - inherit.min()
        norm = (inherit - inherit.min()) / span if span > 1e-12 else np.zeros(len(cand))
        logits = norm / self.temperature
        for got in range(want):
            ok = ~blocked[cand]
            if not ok.any():
                return got
            w = np.exp(logits[ok] - logits[ok].max())
            c = int(self.rng.choice(cand[ok], p=w / w.sum()))
            take(c, float(inherit[np.searchsorted(cand, c)]), c in scored, "arm")
        return want

    def run(self, score_fn: ScoreFn) -> Selection:
        """Coarse stage, fine stage, final pick. ``score_fn`` gets batches of times (seconds, sorted)
        and returns one score in [0, 1] per time, or None/NaN where it has none."""
        self._coarse(score_fn)
        self._fine(score_fn)
        frames = self._pick()
        scored = tuple(sorted((j / self.fps, v) for j, v in self.tried.items() if v is not None))
        return Selection(tuple(frames), self.arm_stats(), scored, self.attempts, self.failed, self.pulls["coarse"],
                         self.pulls["fine"], self.budget, self.n_frames, tuple(self.warnings))


# -- the job ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class FocusRequest:
    """One selection. ``transcript`` is the project's ASR segments (start, end, text) for the
    embedded scorer; ``example_time`` (+ ``example_box``, normalised x1, y1, x2, y2) makes the query
    an example frame/region of this video, scored by visual similarity instead of text."""

    path: str
    query: str
    k: int = 16
    budget_frames: int | None = None
    budget_share: float = 0.02
    seed: int = 0
    arms: int | None = None
    coarse_per_arm: int = 3
    fine_fps: float = 1.0
    temperature: float = 0.06
    scorer: str = "embedded"
    scorer_path: str | None = None
    transcript: tuple[tuple[float, float, str], ...] = ()
    example_time: float | None = None
    example_box: tuple[float, float, float, float] | None = None
    ocr: bool | None = None  # embedded scorer: None reads text only when the query asks about text
    faces: bool = True
    device: str | None = None
    batch_size: int = 8
    max_size: tuple[int, int] = (640, 360)
    thumb_size: tuple[int, int] = (160, 90)
    thumbnails: bool = True  # False: no previews in the result (the command line; a view that fetches its own)
    # the media index (core.perception.index.MediaIndex) as a first stage (core.focus.indexed): the
    # bandit runs on the ``shortlist`` best arms only (None: max(4, k/2)), with the indexed frames
    # there as free coarse pulls and ``rescore_frames`` new frames scored by the full scorer
    index: Any = field(default=None, compare=False, repr=False)
    shortlist: int | None = None
    rescore_frames: int = 4


@dataclass(frozen=True)
class FocusResult:
    request: FocusRequest
    frames: tuple[ChosenFrame, ...]
    arms: tuple[ArmStat, ...]
    scored: tuple[tuple[float, float], ...]
    frames_scored: int
    total_frames: int
    budget: int
    scorer: str
    wall_s: float
    warnings: tuple[str, ...]
    duration: float
    fps: float
    coarse_pulls: int = 0
    fine_pulls: int = 0
    failed_frames: int = 0
    broken_frames: int = 0
    thumbnails: tuple[np.ndarray, ...] = field(default=(), compare=False, repr=False)
    from_index: int = 0  # frames scored from the index's descriptions (no decode, no vision model)
    shortlist: tuple[int, ...] = ()  # the arms the first stage kept (index mode)

    @property
    def share(self) -> float:
        return self.frames_scored / max(1, self.total_frames)


def validate(req: FocusRequest) -> None:
    """Clear ValueErrors for requests that cannot run."""
    if req.example_time is None and not (req.query or "").strip():
        raise ValueError("The query is empty: type what to look for (e.g. \"a bus at the gate\") "
                         "or pick an example frame.")
    if req.k < 1:
        raise ValueError(f"k must be at least 1 (got {req.k}).")
    if req.budget_frames is not None and req.budget_frames < 1:
        raise ValueError(f"The budget must be at least 1 frame (got {req.budget_frames}).")
    if not (0 < req.budget_share <= 1):
        raise ValueError(f"The budget share must be in (0, 1] (got {req.budget_share}).")
    if req.temperature <= 0 or req.fine_fps <= 0 or req.coarse_per_arm < 1 or (req.arms is not None and req.arms < 1):
        raise ValueError("temperature and fine_fps must be positive; coarse_per_arm and arms at least 1.")
    if req.example_box is not None and req.example_time is None:
        raise ValueError("An example region needs the time of the frame it was drawn on (example_time).")
    if req.rescore_frames < 0 or (req.shortlist is not None and req.shortlist < 1):
        raise ValueError("rescore_frames must be at least 0 and the shortlist at least 1 arm.")


def budget_for(req: FocusRequest, total_frames: int) -> tuple[int, list[str]]:
    if req.budget_frames is not None:
        return min(int(req.budget_frames), total_frames), []
    b = math.floor(req.budget_share * total_frames + 1e-9)  # never above the share asked for
    if b < MIN_BUDGET:
        b = min(MIN_BUDGET, total_frames)
        return b, [f"The video is short: scoring {b} frames ({100 * b / total_frames:.1f} % of {total_frames}) "
                   f"rather than {100 * req.budget_share:g} %."]
    return b, []


def select_frames(req: FocusRequest, state: JobState) -> FocusResult:
    """Job: choose ``req.k`` frames of ``req.path`` for ``req.query`` (see the module docstring)."""
    from core.focus.scorers import EmbeddedScorer, SeekingScorer, crop_region, make_scorer
    from core.media.decode import MediaError, VideoDecoder, probe

    t0 = time.perf_counter()
    validate(req)
    info = probe(req.path, with_hash=False)
    if info.video is None:
        raise MediaError(f"{info.path.rsplit('/', 1)[-1]} has no video to choose frames from.")
    fps = info.video.fps if info.video.fps > 0 else 25.0
    duration, query = info.duration_s, (req.query or "").strip()
    set_media_span(state, duration)
    state.set_progress(0.0, "loading the scorer")
    dec = VideoDecoder(req.path, max_size=req.max_size)
    try:
        example = None if req.example_time is None else crop_region(dec.frame_at(req.example_time).image,
                                                                    req.example_box)
        scorer = make_scorer(req.scorer, req.scorer_path, device=req.device, transcript=req.transcript,
                             ocr=req.ocr, faces=req.faces, example=example)
        warnings: list[str] = []
        if example is None and not scorer.known_words(query):
            warnings.append(f"Low confidence: no word of \"{query}\" is one the scorer knows, so scores are flat "
                            "and the frames are close to an even spread.")
        total = max(1, int(math.floor(duration * fps + 1e-6)))
        idx = req.index if example is None and isinstance(scorer, EmbeddedScorer) else None
        if req.index is not None and idx is None:
            warnings.append("The media index is not used with an example image or a bring-your-own scorer.")
        budget, notes = (total, []) if idx is not None else budget_for(req, total)
        warnings += notes
        source = f"{info.path}@{os.stat(info.path).st_mtime_ns}"  # cached descriptions die with a changed file
        fetch = SeekingScorer(dec, scorer, query, source, fps, check=lambda: check(state))
        throttle = Throttle(0.25)

        def on_batch(stage: str, sel: FocusSelector, new: list[tuple[float, float]]) -> None:
            state.set_progress(min(0.97, sel.attempts / max(1, sel.budget)),
                               f"{stage}: {sel.attempts}/{sel.budget} frames")
            if throttle() or sel.attempts >= sel.budget:
                state.set_partial_result(FocusPartial(stage, sel.arm_stats(), tuple(new), sel.attempts, sel.budget))

        sel = FocusSelector(duration, fps, budget, np.random.default_rng(req.seed), k=req.k, arms=req.arms,
                            coarse_per_arm=req.coarse_per_arm, fine_fps=req.fine_fps, temperature=req.temperature,
                            batch_size=req.batch_size, check=lambda: check(state), on_batch=on_batch)
        stage, seeded = None, 0
        if idx is not None:
            from core.focus import indexed
            from core.media.decode import fit_size
            from models.loaded import limit_threads

            seeded = indexed.seed_scorer(scorer, idx, source, fps, fit_size(*info.display_size, req.max_size))
            with limit_threads(scorer.threads):
                qv = scorer.embed([query])[0]
            stage = indexed.first_stage(idx, qv, sel, req.shortlist or indexed.shortlist_for(req.k))
            sel.restrict(stage.arms, stage.preferred, fill=False)
            sel.budget = indexed.budget(stage, req.rescore_frames, sel)
            state.set_progress(0.02, f"index: {len(stage.arms)} of {sel.n_arms} clips shortlisted")
        try:
            res = sel.run(fetch)
        except FocusError as e:
            why = (f" First error: {fetch.errors[0]}" if fetch.errors else
                   f" {fetch.broken} frames could not be decoded." if fetch.broken else "")
            raise FocusError(f"{e}{why}") from e
        warnings += list(res.warnings) + fetch.warnings(res.attempts)
        vals = np.asarray([v for _t, v in res.scored])  # flat or weak: no frame is more likely a match than not
        best, mid = float(vals.max()), float(np.median(vals))
        if (best < 0.5 or best - mid < 0.1) and not any(w.startswith("Low confidence") for w in warnings):
            warnings.append(f"Low confidence: the best score is {best:.2f} (median {mid:.2f}); nothing in the frames "
                            "tried clearly matches the query, so the picks are close to an even spread.")
        thumbs = tuple(thumbnail(dec, f.time, req.thumb_size) for f in res.frames) if req.thumbnails else ()
    finally:
        dec.close()
    state.set_progress(1.0, "done")
    return FocusResult(req, res.frames, res.arms, res.scored, res.attempts - fetch.broken, res.total_frames,
                       res.budget, scorer.name, time.perf_counter() - t0, tuple(dict.fromkeys(warnings)),
                       duration, fps, res.coarse_pulls, res.fine_pulls, fetch.failed, fetch.broken, thumbs,
                       fetch.cached if stage is not None else 0, stage.arms if stage is not None else ())


def thumbnail(dec: Any, t: float, size: tuple[int, int]) -> np.ndarray:
    """The frame at ``t`` scaled to fit ``size``; a grey tile if it cannot be decoded (it is only a preview)."""
    import cv2

    try:
        img = dec.frame_at(t).image
    except Exception:  # MediaError or FFmpeg's own errors
        return np.full((size[1], size[0], 3), 96, np.uint8)
    h, w = img.shape[:2]
    s = min(size[0] / w, size[1] / h)
    return cv2.resize(img, (max(1, int(w * s)), max(1, int(h * s))), interpolation=cv2.INTER_AREA)
