"""Shot boundaries on real footage whose cuts are known to the frame.

Ground truth is independent of any detector: a montage of real clips written at known frame
counts (``bench.shots.make_montage``), and the hard cuts of bikes.mp4 and city_mpg.mpg, found
by frame differences and confirmed by eye (see bench/shots.py).
"""
from __future__ import annotations

import numpy as np
import pytest

import mediagen
from bench.shots import make_montage
from core.perception import ops
from projectkit import CancelAfter
from core.jobs import Cancelled, HeadlessState
from core.media.decode import frame_times, probe
from core.store.project import Project
from core.tagging import TaggingError
from core.tagging.shots import (
    DEFAULT_DETECTOR,
    Shot,
    detect_shots,
    load_shots,
    shot_params,
    shots_from_rows,
    shots_track,
    store_shots,
)

# Segments that start early in their sources (cheap to build), each inside one shot: two shots
# of the same black-and-white film scene, two night shots of one skyline, a 12-frame shot, a
# 176×144 source blown up, hand-held phone footage.
SEGMENTS = (
    ("chaplin", 0, 40), ("chaplin", 150, 40), ("city_mpg", 20, 50), ("city_mpg", 120, 40),
    ("bikes", 80, 45), ("fire2", 0, 25), ("bbb_6ch", 10, 60), ("bikes", 140, 12),
    ("iscc_mp4", 250, 80), ("bikes", 190, 40),
)
BIKES_CUTS = [30, 76, 137, 187, 242]


@pytest.fixture(scope="module")
def montage(tmp_path_factory, sample):
    for name in {s[0] for s in SEGMENTS}:
        sample(name)  # fail clearly if a sample is missing
    path = tmp_path_factory.mktemp("shots") / "montage.mp4"
    cuts = make_montage(path, SEGMENTS)
    return path, cuts


def starts(shots: list[Shot]) -> list[int]:
    return [s.start_frame for s in shots[1:]]


def assert_tiles(shots: list[Shot], path) -> None:
    """Shots are numbered, ordered, contiguous, and span the file and all its frames."""
    info = probe(path, with_hash=False)
    ft = frame_times(path)
    assert [s.index for s in shots] == list(range(len(shots)))
    assert shots[0].start == 0.0 and shots[0].start_frame == 0
    assert shots[-1].end == pytest.approx(max(info.duration_s, ft[-1]))
    assert shots[-1].end_frame == len(ft)
    for a, b in zip(shots, shots[1:]):
        assert a.end == b.start and a.end_frame == b.start_frame and b.frames > 0
        assert b.start == pytest.approx(ft[b.start_frame], abs=1e-6)  # a real frame timestamp


def test_montage_cuts_within_one_frame(montage):
    path, cuts = montage
    st = HeadlessState()
    shots = detect_shots(str(path), st)
    found = starts(shots)
    assert len(found) == len(cuts), (found, cuts)
    assert all(abs(f - c) <= 1 for f, c in zip(found, cuts)), (found, cuts)
    assert_tiles(shots, path)
    assert st.progress == 1.0


def test_bikes_hard_cuts(sample):
    path = sample("bikes")
    shots = detect_shots(str(path), HeadlessState())
    found = starts(shots)
    assert len(found) == len(BIKES_CUTS) and all(abs(f - c) <= 1 for f, c in zip(found, BIKES_CUTS)), found
    assert [round(s.start, 2) for s in shots[1:]] == pytest.approx([1.20, 3.04, 5.48, 7.48, 9.68], abs=0.041)
    assert_tiles(shots, path)


def test_real_clips_with_one_and_no_cut(sample):
    city = detect_shots(str(sample("city_mpg")), HeadlessState())  # MPEG-PS: its clock starts at ~0.5 s
    assert [abs(f - 116) <= 1 for f in starts(city)] == [True]
    assert_tiles(city, sample("city_mpg"))
    film = detect_shots(str(sample("chaplin")), HeadlessState())  # flickering film, no cut
    assert len(film) == 1
    assert_tiles(film, sample("chaplin"))
    vfr = detect_shots(str(sample("fire2")), HeadlessState())  # variable frame rate phone clip
    assert len(vfr) == 1 and vfr[0].frames == len(frame_times(sample("fire2")))


def test_threshold_and_detector_choice_change_the_result(montage):
    path, cuts = montage
    none = detect_shots(str(path), HeadlessState(), threshold=250.0)  # nothing is that far above its neighbours
    assert len(none) == 1
    content = detect_shots(str(path), HeadlessState(), detector="content")
    assert len(content) > 1
    with pytest.raises(ValueError, match="unknown shot detector"):
        detect_shots(str(path), HeadlessState(), detector="magic")


def test_min_shot_length_drops_the_short_shot(montage):
    path, cuts = montage
    short = cuts[SEGMENTS.index(("bikes", 140, 12)) - 1]  # the 12-frame (0.48 s) shot starts here
    found = starts(detect_shots(str(path), HeadlessState(), min_shot_s=1.0))
    assert any(abs(f - short) <= 1 for f in found)  # the cut into it is kept,
    assert all(abs(f - (short + 12)) > 1 for f in found)  # the one 12 frames later is not
    assert len(found) == len(cuts) - 1


def test_short_files_are_one_shot(tmp_path):
    for frames in (1, 3):
        p = mediagen.make_video_only(tmp_path / f"f{frames}.mp4", duration=frames / 25)
        shots = detect_shots(str(p), HeadlessState())
        assert len(shots) == 1 and shots[0].frames == frames
        assert_tiles(shots, p)


def test_audio_only_is_one_shot_without_frames(tmp_path):
    p = mediagen.make_audio_only(tmp_path / "a.wav", duration=1.5)
    shots = detect_shots(str(p), HeadlessState())
    assert shots == [Shot(0, 0.0, pytest.approx(1.5, abs=0.01), 0, 0)]


@pytest.mark.parametrize("make", ["text", "empty", "truncated", "missing"])
def test_unreadable_files_raise_a_clear_tagging_error(tmp_path, media_dir, make):
    p = mediagen.make_bad(tmp_path / "bad.mp4", make, media_dir / "clip.mp4")
    with pytest.raises(TaggingError) as e:
        detect_shots(str(p), HeadlessState())
    msg = str(e.value)
    assert msg.startswith("Cannot find shots:") and "bad.mp4" in msg


def test_damaged_middle_still_gives_shots(tmp_path, sample):
    p = mediagen.corrupt_copy(sample("bikes"), tmp_path / "damaged.mp4", seed=3)
    shots = detect_shots(str(p), HeadlessState())
    assert shots and shots[-1].end > 9.0
    assert abs(shots[1].start_frame - 30) <= 1  # the first cut lies before the damage


def test_cancel_before_and_during(montage):
    path, _ = montage
    st = HeadlessState()
    st.cancel()
    with pytest.raises(Cancelled):
        detect_shots(str(path), st)
    mid = CancelAfter(0.3)
    with pytest.raises(Cancelled):
        detect_shots(str(path), mid)
    assert 0.3 <= mid.progress < 1.0


def test_store_load_and_track(tmp_path, sample):
    path = sample("bikes")
    params = shot_params()
    assert params["detector"] == DEFAULT_DETECTOR
    shots = detect_shots(str(path), HeadlessState())
    with Project.create(tmp_path / "p.kestrel") as p:
        mid = ops.register_media(p, probe(path))
        assert load_shots(p, mid, params) is None
        run = store_shots(p, mid, shots, params, duration_s=0.5)
        assert load_shots(p, mid, params) == shots
        assert load_shots(p, mid, shot_params(threshold=4.0)) is None  # other settings: recompute
        tracks = [t for t in ops.load_tracks(p, mid) if t.kind == "shots"]
        assert len(tracks) == 1 and tracks[0].run_id == run
        assert [(i.start, i.end) for i in tracks[0].items] == [(s.start, s.end) for s in shots]
        store_shots(p, mid, shots, params)  # again: the track is replaced, not doubled
        assert len([t for t in ops.load_tracks(p, mid) if t.kind == "shots"]) == 1
    tr = shots_track(shots)
    assert tr.kind == "shots" and len(tr.items) == len(shots) and tr.items[1].data["frames"] == [30, 76]
    rows = np.asarray([s.to_row() for s in shots])
    assert shots_from_rows(rows) == shots
