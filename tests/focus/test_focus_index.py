"""FOCUS restricted to a first stage's shortlist (FocusSelector.restrict): the bandit pulls and
picks only in the shortlisted arms, takes the preferred (indexed) frames as coarse pulls, and the
first stage ranks arms by their best indexed frame (an arm without one by the frame before it)."""
from __future__ import annotations

import numpy as np

from core.focus.indexed import budget, first_stage
from core.focus.search import FocusSelector


def test_restricted_bandit_pulls_and_picks_only_in_the_shortlist():
    sel = FocusSelector(320.0, 10.0, 3200, np.random.default_rng(0), k=6, arms=20)
    arms, preferred = [3, 11], [sel.edges[3] + 5, sel.edges[11] + 7, sel.edges[11] + 60]
    sel.restrict(arms, preferred, fill=False)
    sel.budget = len(preferred) + 10
    seen: list[float] = []

    def score(times):
        seen.extend(times)
        return [0.9 if 180 <= t < 190 else 0.1 for t in times]

    res = sel.run(score)
    pulled = {sel._arm_of(int(round(t * 10))) for t in seen}
    assert pulled <= set(arms) and res.attempts == sel.budget
    assert {int(round(t * 10)) for t in seen[:3]} == set(int(j) for j in preferred)  # coarse = the indexed frames
    assert all(f.arm in arms for f in res.frames) and len(res.frames) == 6
    assert any(180 <= f.time < 190 for f in res.frames)


class _Index:  # the two things first_stage reads of a MediaIndex
    def __init__(self, times, probs):
        self.times, self._p = np.asarray(times, float), np.asarray(probs, float)

    def match(self, _q):
        return self._p


def test_first_stage_ranks_arms_by_their_best_indexed_frame():
    sel = FocusSelector(160.0, 10.0, 1600, np.random.default_rng(0), k=4, arms=10)  # 16 s arms
    idx = _Index([1.0, 40.0, 100.0, 150.0], [0.1, 0.95, 0.2, 0.6])
    st = first_stage(idx, np.zeros(3), sel, shortlist=3)
    # arms 3 and 4 hold no indexed frame: the frame at 40 s stands for them (nothing changed there)
    assert st.arms == (2, 3, 4) and st.best == 0.95 and st.prior[9] == 0.6 and st.prior[0] == 0.1
    assert st.preferred == (400,)
    assert budget(st, 5, sel) == 1 + 2 + 5  # the indexed frame, a centre for each empty arm, 5 new
