"""The phantom: deterministic anatomy in the right orientation, and lesions/findings that show."""

from __future__ import annotations

import numpy as np
import pytest

from clearbench.scans.scan import LESION_TYPES
from clearbench.scans.synth import phantom as ph
from clearbench.scans.windows import WINDOWS, apply_window


@pytest.fixture(scope="module")
def anatomy() -> ph.Anatomy:
    return ph.sample_anatomy(np.random.default_rng(11))


def test_same_generator_state_gives_same_patient_and_pixels() -> None:
    a = ph.sample_anatomy(np.random.default_rng(5))
    b = ph.sample_anatomy(np.random.default_rng(5))
    c = ph.sample_anatomy(np.random.default_rng(6))
    zs = [100.0, 300.0, 450.0]
    assert np.array_equal(ph.render(a, zs), ph.render(b, zs))
    assert a.length_mm != c.length_mm
    assert not np.array_equal(ph.render(a, zs), ph.render(c, zs))


def test_a_slice_renders_the_same_in_any_z_set(anatomy: ph.Anatomy) -> None:
    full = ph.render(anatomy, [120.0, 250.0, 400.0])
    alone = ph.render(anatomy, [250.0])
    assert np.array_equal(full[1], alone[0])
    assert full.dtype == np.int16 and full.shape == (3, 64, 64)


def test_orientation_and_tissue_values(anatomy: ph.Anatomy) -> None:
    """Rows run anterior->posterior, columns patient right->left, z superior; HU as in CT."""
    liver = anatomy.parts["liver"]
    z = liver.center[2]
    labels = ph.tissue_map(anatomy, z, size=64)
    hu = ph.render(anatomy, [z], size=64)[0]
    _, cols = np.nonzero(labels == ph.TISSUES.index("liver"))
    assert cols.mean() < 31.5  # the liver is on the patient's right = image left
    spine_rows, _ = np.nonzero(labels == ph.TISSUES.index("canal"))
    assert spine_rows.mean() > 31.5  # the spine is posterior = lower half of the image
    assert abs(np.median(hu[labels == ph.TISSUES.index("liver")]) - ph.HU["liver"]) < 15
    assert hu[0, 0] < -950  # air outside the body

    lo, hi = anatomy.regions["lungs"]
    chest = ph.render(anatomy, [(lo + hi) / 2], size=64)[0]
    lung = ph.tissue_map(anatomy, (lo + hi) / 2, size=64) == ph.TISSUES.index("lung")
    assert lung.sum() > 300
    assert -900 < np.median(chest[lung]) < -750
    pelvis = ph.tissue_map(anatomy, anatomy.parts["bladder"].center[2], size=64)
    assert (pelvis == ph.TISSUES.index("bladder")).sum() > 10
    assert (pelvis == ph.TISSUES.index("lung")).sum() == 0


def test_pixel_grid_matches_the_documented_geometry() -> None:
    xs, ys = ph.pixel_grid(4, 2.0, center_mm=(10.0, -5.0))
    assert xs.tolist() == [7.0, 9.0, 11.0, 13.0]
    assert ys.tolist() == [-8.0, -6.0, -4.0, -2.0]


@pytest.mark.parametrize("lesion_type", list(LESION_TYPES.values()))
def test_each_lesion_type_sits_in_its_region_and_shows_in_its_box(anatomy: ph.Anatomy, lesion_type: str) -> None:
    rng = np.random.default_rng(sum(map(ord, lesion_type)))
    lesion = ph.place_lesion(anatomy, lesion_type, rng)
    zs = lesion.shape.center[2] + np.arange(-15.0, 15.1, 5.0)
    ann = lesion.annotate(zs, size=64, fov_mm=anatomy.fov_mm)
    assert abs(zs[ann.key_index] - lesion.shape.center[2]) <= 2.5

    with_lesion = ph.render(anatomy, zs, features=[lesion])[ann.key_index]
    without = ph.render(anatomy, zs)[ann.key_index]
    window = WINDOWS["lung" if lesion_type == "lung" else "abdomen"]
    diff = np.abs(apply_window(with_lesion, window) - apply_window(without, window))
    changed = diff > 0.08
    assert changed.sum() >= 4, f"{lesion_type} lesion is not visible"
    x1, y1, x2, y2 = ann.box
    rows, cols = np.nonzero(changed)
    inside = (
        (cols >= np.floor(x1) - 1) & (cols <= np.ceil(x2) + 1) & (rows >= np.floor(y1) - 1) & (rows <= np.ceil(y2) + 1)
    )
    assert inside.mean() > 0.9
    # learnability: the lesion moves the mean windowed intensity of its slice, and of its box by far more
    assert abs(apply_window(with_lesion, window).mean() - apply_window(without, window).mean()) > 1e-4
    box = (slice(int(np.floor(y1)), int(np.ceil(y2)) + 1), slice(int(np.floor(x1)), int(np.ceil(x2)) + 1))
    assert abs(apply_window(with_lesion[box], window).mean() - apply_window(without[box], window).mean()) > 0.03
    col, row = (round(v) for v in ann.center_px)
    assert abs(int(with_lesion[row, col]) - ph.LESION_HU[lesion_type]) < 60


@pytest.mark.parametrize("name", ph.CHEST_ABNORMALITIES)
def test_each_chest_abnormality_changes_the_lung_window(anatomy: ph.Anatomy, name: str) -> None:
    rng = np.random.default_rng(sum(map(ord, name)))
    finding = ph.chest_finding(anatomy, name, rng)
    assert finding.labels and all(label.count("*") == 1 for label in finding.labels)
    assert any(label.split("*")[0] == name for label in finding.labels)
    lo, hi = anatomy.regions["chest"]
    zs = np.arange(lo, hi, anatomy.fov_mm / 64)
    base = apply_window(ph.render(anatomy, zs, noise=False), WINDOWS["lung"])
    shown = apply_window(ph.render(anatomy, zs, features=[finding], noise=False), WINDOWS["lung"])
    changed = np.abs(shown - base) > 0.03
    assert changed.sum() >= 20, f"{name} changes only {changed.sum()} voxels"


def test_lung_tumour_has_the_requested_size_and_sits_in_lung(anatomy: ph.Anatomy) -> None:
    tumour = ph.lung_tumour(anatomy, 40.0, np.random.default_rng(3))
    assert tumour.diameter_mm == pytest.approx(40.0)
    x, y, z = tumour.shape.center
    assert ph.tissue_at(anatomy, x, y, z) == "lung"
    px = anatomy.fov_mm / 64
    hu = ph.render(anatomy, [z], features=[tumour], noise=False)[0]
    labels = ph.tissue_map(anatomy, z, features=[tumour])
    area_mm2 = (labels == ph.TISSUES.index("lesion")).sum() * px * px
    a, b = tumour.shape.radii[:2]
    assert area_mm2 == pytest.approx(np.pi * a * b, rel=0.35)
    assert abs(np.median(hu[labels == ph.TISSUES.index("lesion")]) - tumour.hu) < 20


def test_unknown_names_are_rejected(anatomy: ph.Anatomy) -> None:
    with pytest.raises(ValueError, match="unknown lesion type"):
        ph.place_lesion(anatomy, "brain", np.random.default_rng(0))
    with pytest.raises(ValueError, match="unknown chest finding"):
        ph.chest_finding(anatomy, "fracture", np.random.default_rng(0))
