"""Fixtures of the detection formats' tests (COCO, MOT): a project with a detector's stored boxes."""
from __future__ import annotations

import pytest

from test_boxes import make_project


@pytest.fixture
def project(tmp_path):
    p, mid = make_project(tmp_path)
    yield p, mid
    p.close()


@pytest.fixture(scope="module")
def untouched(tmp_path_factory):
    """One project for the tests of refused files (each checks that nothing was stored)."""
    p, mid = make_project(tmp_path_factory.mktemp("refused"))
    yield p, mid
    p.close()
