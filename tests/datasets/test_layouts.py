from __future__ import annotations

import numpy as np
import pytest

from attnseg.datasets import detect_layout, discover, load_case, make_dataset_splits
from attnseg.datasets.masks2d import mask_set_encoding
from attnseg.errors import ConfigError, DataError


def test_msd_4d_channels(msd_root):
    ds = discover(msd_root)
    assert ds.layout == "msd" and len(ds) == 3 and ds.spatial_dims == 3
    assert ds.channel_names == ["FLAIR", "T1w"]
    assert ds.labels == {"background": 0, "a": 1, "b": 2} and ds.regions is None
    image, label, meta = load_case(ds.cases[2], ds)
    assert image.shape == (2, 6, 5, 4) and image.dtype == np.float32
    assert image[0].max() == 2 and image[1].min() == 12  # channel c of case i holds 10*c + i
    assert label.shape == (6, 5, 4) and label.ravel()[:3].tolist() == [0, 1, 2]
    assert meta.axcodes == ("L", "P", "S")
    test = discover(msd_root, split="test")
    assert test.case_ids == ["case_100"] and test.cases[0].label is None
    # one channel of a 4D file
    flair = discover(msd_root, channels=["T1w"])
    assert flair.channel_names == ["T1w"]
    assert load_case(flair.cases[1], flair)[0][:, 0, 0, 0].tolist() == [11.0]


def test_nnunet_v2_with_regions(nnunet_root):
    ds = discover(nnunet_root)
    assert ds.layout == "nnunet" and ds.case_ids == ["pt0", "pt1"]
    assert ds.channel_names == ["T2", "ADC"]
    assert ds.regions == {"whole": [1, 2, 3], "core": [2, 3], "enhancing": [3]}
    assert sorted(ds.labels.values()) == [0, 1, 2, 3]
    assert [p.name for p in ds.cases[1].images] == ["pt1_0000.nii.gz", "pt1_0001.nii.gz"]
    image, label, _ = load_case(ds.cases[1], ds)
    assert image[:, 0, 0, 0].tolist() == [1.0, 11.0]
    one = discover(nnunet_root, channels=["ADC"], regions=["core"])
    assert [p.name for p in one.cases[0].images] == ["pt0_0001.nii.gz"]
    assert one.regions == {"core": [2, 3]}


def test_brats_2018_grade_folders_and_channel_choice(brats2018_root):
    assert detect_layout(brats2018_root) == ("brats", {})
    ds = discover(brats2018_root)
    assert ds.case_ids == ["Brats18_A_1", "Brats18_B_1", "Brats18_C_1"]
    assert ds.cases[2].meta["grade"] == "LGG"
    assert ds.info["year"] == 2018 and ds.info["label_scheme"] == "2017"
    assert ds.labels == {"background": 0, "NCR/NET": 1, "ED": 2, "ET": 4}
    assert ds.regions == {"WT": [1, 2, 4], "TC": [1, 4], "ET": [4]}
    image, label, _ = load_case(ds.cases[0], ds)
    assert image[:, 0, 0, 0].tolist() == [1.0, 2.0, 3.0, 4.0]  # flair, t1, t1ce, t2
    # the one-line option used for brats2018_flair_t1_wt; 2023 names are aliases
    wt = discover(brats2018_root, channels=["flair", "t1"], regions=["WT"])
    assert wt.channel_names == ["flair", "t1"] and wt.regions == {"WT": [1, 2, 4]}
    assert load_case(wt.cases[0], wt)[0][:, 0, 0, 0].tolist() == [1.0, 2.0]
    alias = discover(brats2018_root, channels=["t2w", "t1c"])
    assert alias.channel_names == ["t2", "t1ce"]
    assert discover(brats2018_root, regions=None).regions is None
    with pytest.raises(ConfigError, match="unknown BraTS channel 'dwi'"):
        discover(brats2018_root, channels=["dwi"])


def test_brats_2023_naming_uses_label_3(brats2023_root):
    ds = discover(brats2023_root)
    assert ds.info["label_scheme"] == "2023" and ds.regions["ET"] == [3]
    assert ds.channel_names == ["t2f", "t1n", "t1c", "t2w"]
    flair_t1 = discover(brats2023_root, channels=["flair", "t1"])
    assert load_case(flair_t1.cases[1], flair_t1)[0][:, 0, 0, 0].tolist() == [1.0, 2.0]
    with pytest.raises(ConfigError, match="2023 naming"):
        discover(brats2023_root, year=2018)


def test_folder_patterns_and_deepmedic_preset(deepmedic_root):
    # auto-detected preset
    auto = discover(deepmedic_root)
    assert auto.layout == "folder" and auto.info["preset"] == "brats2015-deepmedic"
    assert auto.regions == {"WT": [1, 2, 3, 4], "TC": [1, 3, 4], "ET": [4]}
    # the one-line option from the issue
    ds = discover(deepmedic_root, channels=["*flair*", "*t1c*"], label="*OTMultiClass*", year=2015)
    assert ds.channel_names == ["flair", "t1c"]
    image, label, _ = load_case(ds.cases[0], ds)
    assert image[:, 0, 0, 0].tolist() == [1.0, 3.0]
    assert label.dtype == np.uint8 and label.ravel()[:5].tolist() == [0, 1, 2, 3, 4]
    # without year= the labels are undeclared, no regions
    plain = discover(deepmedic_root, channels=["*flair*"], label="OTMultiClass.nii.gz")
    assert plain.labels == {} and plain.regions is None and not plain.info["labels_declared"]
    # ambiguous pattern is recorded per case, not raised
    amb = discover(deepmedic_root, channels=["*.nii.gz"], label="*OT*")
    assert {p.kind for p in amb.problems} == {"ambiguous_file"} and len(amb.problems) == 2


def test_folder_case_placeholder(brats2018_root):
    ds = discover(brats2018_root, channels=["{case}_t1ce.nii.gz"], label="{case}_seg.nii.gz", year=2019)
    assert ds.layout == "folder" and ds.channel_names == ["t1ce"]
    assert load_case(ds.cases[0], ds)[0][:, 0, 0, 0].tolist() == [3.0]


def test_paired_nifti(paired_nifti_root):
    ds = discover(paired_nifti_root)
    assert ds.layout == "paired" and len(ds) == 4 and ds.spatial_dims == 3
    assert ds.channel_names == ["image"] and ds.labels == {}
    image, label, meta = load_case(ds.case("hippo_002"), ds)
    assert image.shape == (1, 6, 5, 4) and image.max() == 2
    declared = discover(paired_nifti_root, labels=[0, 1, 2])
    assert declared.labels == {"background": 0, "label_1": 1, "label_2": 2}


def test_paired_2d_with_mask_suffix(paired_2d_root):
    ds = discover(paired_2d_root)
    assert ds.layout == "paired" and ds.spatial_dims == 2
    assert ds.channel_names == ["red", "green", "blue"]
    assert [c.label.name for c in ds.cases] == ["img0_mask.png", "img1_mask.png", "img2_mask.png"]
    image, label, meta = load_case(ds.cases[1], ds)
    assert image.shape == (3, 8, 10) and image[0, 0, 0] == 51
    assert label.shape == (8, 10) and int(label.sum()) == 12 and label.max() == 1
    red = discover(paired_2d_root, channels=[0])
    assert load_case(red.cases[0], red)[0].shape == (1, 8, 10)


def test_slices2d_numeric_order_and_patient_splits(slices_root):
    ds = discover(slices_root)
    assert ds.layout == "slices2d" and len(ds) == 14 and ds.spatial_dims == 2
    first = [c.meta["slice"] for c in ds.cases if c.group == "TCGA_AA_0001_20000101"]
    assert first == list(range(1, 12))  # 1, 2, ..., 10, 11 (not 1, 10, 11, 2)
    flair = discover(slices_root, channels=[1], channel_names=["pre", "flair", "post"])
    assert flair.channel_names == ["flair"]
    image, label, _ = load_case(flair.case("TCGA_AA_0001_20000101_10"), flair)
    assert image.shape == (1, 6, 7) and image.max() == 10
    image, label, _ = load_case(flair.case("TCGA_AA_0001_20000101_2"), flair)
    assert int(label.sum()) == 6
    folds = make_dataset_splits(ds, k=2, seed=0)
    for f in folds:
        assert {c.rsplit("_", 1)[0] for c in f["val"]}.isdisjoint({c.rsplit("_", 1)[0] for c in f["train"]})


def test_errors_name_the_folder(tmp_path):
    with pytest.raises(DataError, match="dataset folder not found"):
        discover(tmp_path / "nope")
    (tmp_path / "empty" / "x").mkdir(parents=True)
    with pytest.raises(DataError, match="cannot tell the dataset layout"):
        discover(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "dataset.json").write_text("{not json")
    with pytest.raises(DataError, match="dataset.json: not valid JSON"):
        discover(tmp_path / "bad")


def test_unknown_option_and_layout(msd_root):
    with pytest.raises(ConfigError, match=r"option\(s\) \['year'\] do not apply to the msd layout"):
        discover(msd_root, year=2018)
    with pytest.raises(ConfigError, match="unknown layout"):
        discover(msd_root, layout="voc")


def test_load_case_rejects_misaligned_label(paired_nifti_root):
    from tests.datasets.conftest import label_volume, write_nifti

    shifted = np.eye(4)
    shifted[0, 3] = 5.0
    write_nifti(paired_nifti_root / "labels" / "hippo_001.nii.gz", label_volume(), shifted)
    ds = discover(paired_nifti_root)
    with pytest.raises(DataError, match="case hippo_001: label .* different affines"):
        load_case(ds.case("hippo_001"), ds)


# --- the real data in ../shared/data -----------------------------------------------------------------
@pytest.mark.data
def test_shared_task04():
    from tests.conftest import shared_dataset

    ds = discover(shared_dataset("Task04_Hippocampus"))
    assert ds.layout == "msd" and len(ds) == 200 and ds.channel_names == ["MRI"]
    assert ds.labels == {"background": 0, "Anterior": 1, "Posterior": 2}
    image, label, meta = load_case(ds.cases[0], ds)
    assert image.shape[0] == 1 and label.shape == image.shape[1:] and set(np.unique(label)) == {0, 1, 2}


@pytest.mark.data
def test_shared_brats2018_one_line():
    from tests.conftest import shared_dataset

    ds = discover(shared_dataset("brats2018_flair_t1_wt"), channels=["flair", "t1"], regions=["WT"])
    assert ds.case_ids == [
        "Brats18_2013_3_1",
        "Brats18_CBICA_AQN_1",
        "Brats18_TCIA01_425_1",
        "Brats18_TCIA02_370_1",
    ]
    assert ds.regions == {"WT": [1, 2, 4]}
    image, label, meta = load_case(ds.case("Brats18_CBICA_AQN_1"), ds)
    assert image.shape == (2, 240, 240, 155)
    assert int(np.isin(label, ds.regions["WT"]).sum()) == 26500  # SOURCE.md: WT voxels


@pytest.mark.data
def test_shared_brats2015_patterns():
    from tests.conftest import shared_dataset

    root = shared_dataset("brats2015_flair_t1c")
    ds = discover(root, channels=["*flair*", "*t1c*"], label="*OTMultiClass*", year=2015)
    assert ds.case_ids == ["brats_2013_pat0001_1", "brats_2013_pat0004_1", "brats_2013_pat0006_1"]
    image, label, _ = load_case(ds.case("brats_2013_pat0001_1"), ds)
    from attnseg.datasets import labels_to_regions

    regions = labels_to_regions(label, ds.regions)
    assert regions.reshape(3, -1).sum(1).tolist() == [111724, 26371 + 818 + 31485, 31485]  # SOURCE.md
    assert discover(root).info["preset"] == "brats2015-deepmedic"


@pytest.mark.data
def test_shared_2d_sets():
    from tests.conftest import shared_dataset

    kv = discover(shared_dataset("kvasir_seg_5"))
    # JPEG masks declare nothing (they may hold 0/255 or class indices); the values decide
    assert kv.layout == "paired" and len(kv) == 5 and kv.labels == {}
    encoding = mask_set_encoding(kv).encoding
    assert (encoding.kind, encoding.levels, encoding.outputs) == ("lossy", (0, 255), (0, 1))
    lgg = discover(shared_dataset("lgg_flair_2d"), channels=[1])
    assert lgg.layout == "slices2d" and len(lgg) == 344 and len(set(lgg.groups)) == 16
    tumour = [c for c in lgg.cases if c.group == "TCGA_CS_4941_19960909"]
    assert len(tumour) == 23 and [c.meta["slice"] for c in tumour] == list(range(1, 24))
    folds = make_dataset_splits(lgg, k=4, seed=0)
    assert sorted(len({c.rsplit("_", 1)[0] for c in f["val"]}) for f in folds) == [4, 4, 4, 4]
