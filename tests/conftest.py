import sys
from importlib.util import spec_from_file_location
from pathlib import Path

import pytest
import torch

_ROOT = Path(__file__).resolve().parents[1]


class _ThisCheckout:
    """setup.cfg installs generators/ and cli/ as synthgen.generators and synthgen.cli; an editable
    install made from another checkout (a shared venv, a git worktree) maps them to *its* folders,
    so a worktree's tests silently ran another checkout's generators and CLI. In-process imports of
    those two packages come from this checkout (subprocesses still follow the install)."""

    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name in ("synthgen.generators", "synthgen.cli"):
            folder = _ROOT / name.split(".")[1]
            return spec_from_file_location(name, folder / "__init__.py", submodule_search_locations=[str(folder)])
        return None


if "synthgen.generators" not in sys.modules and "synthgen.cli" not in sys.modules:
    sys.meta_path.insert(0, _ThisCheckout)

torch.set_num_threads(1)  # 2 shared cores: avoid oversubscription slowdowns


DATA = Path(__file__).parent / "data"
MICRO = DATA / "stylegan2ada_micro"
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"
TINY = SHARED / "stylegan2ada_tiny"


@pytest.fixture
def micro_pkl():
    return MICRO / "network-scrubbed-p4.pkl"


def require_tiny():
    if not (TINY / "network-scrubbed-p4.pkl").is_file():
        pytest.skip(f"{TINY} not present (CI has ../shared/fixtures; the 24 MB pickles are not in the repo)")
    return TINY


@pytest.fixture(scope="session")
def gen_dir(tmp_path_factory):
    """A generated tree <class>/<image>.png: 4 classes x 6 images of 16x16 (read-only for tests)."""
    from synthgen.generation import GenerateConfig, generate

    out = tmp_path_factory.mktemp("g") / "raw"
    generate(GenerateConfig(network=str(MICRO / "network-scrubbed-p4.pkl"), out=str(out), classes="0-3",
                            per_class=6, progress=False))
    return out


@pytest.fixture(scope="session")
def uncond_ckpt(tmp_path_factory):
    """A tiny unconditional random-init generator saved in our checkpoint format."""
    from synthgen.generators.stylegan2ada import StyleGAN2Config, random_init, save_checkpoint

    cfg = StyleGAN2Config.from_hyperparams(z_dim=32, c_dim=0, w_dim=32, img_resolution=16,
                                           mapping_layers=2, channel_base=256, channel_max=32,
                                           num_fp16_res=2, conv_clamp=256)
    net = random_init(cfg, seed=1)
    path = tmp_path_factory.mktemp("uncond") / "uncond.pt"
    save_checkpoint(path, cfg, net.state_dict(), {"source_format": "random-init"})
    return path


# Tests that take over ~1 s on the idle 2-core VM (pytest --durations=0): marked slow here, in
# one place, so `make test` stays quick; CI runs them with `make test-slow`.
SLOW = {
    "test_cli_errors.py::test_info_escapes_strings_read_from_the_file",  # ~3 s: make test back under 30 s
    "test_validation.py::test_every_align_input_gets_a_record",  # ~0.75 s
    "test_pickle_attacks.py::test_deep_record_chain_is_refused_without_recursion",  # ~0.7 s
    # release: each runs the remediation loop (2+ audits with HTML reports, ~3-10 s)
    "test_release.py::test_regenerate_replaces_flagged_images_keeps_class_sizes_and_certifies",
    "test_release.py::test_rebuild_from_the_card_is_byte_identical",
    "test_release.py::test_drop_policy_removes_and_keeps_labels_contiguous",
    "test_release.py::test_rounds_are_bounded_and_a_remaining_leak_writes_nothing",
    "test_release.py::test_verify_catches_a_flipped_byte_and_a_quarantined_key_slipped_back",
    "test_release.py::test_interrupted_release_resumes_to_the_same_bytes",
    "test_release.py::test_release_inside_the_run_is_refused",
    "test_release.py::test_unconditional_views_are_dropped_not_rerendered",
    "test_release.py::test_an_unreadable_synthetic_image_makes_the_audit_inconclusive",
    "test_release.py::test_an_audit_of_a_subset_is_redone_in_full_before_anything_is_certified",
    "test_release.py::test_aligned_runs_replace_through_their_own_alignment_and_rebuild[stage]",
    "test_release.py::test_aligned_runs_replace_through_their_own_alignment_and_rebuild[inline]",
    "test_gate.py::test_several_matchers_each_calibrated_and_combined",
    "test_gate.py::test_clean_sets_trip_the_gate_at_most_alpha_of_the_time",
    "test_gate.py::test_planted_copies_are_a_leak_with_names_pvalues_and_next_steps",
    "test_gate.py::test_nan_never_passes_and_is_named",
    "test_gate.py::test_clean_large_gallery_passes_where_the_pairwise_rule_cries_leak",
    "test_gate.py::test_tiny_calibration_is_inconclusive_and_counts_distinct_pairs",
    "test_gate.py::test_uninformative_matcher_is_inconclusive",
    "test_audit.py::test_folder_audit_with_cache_reuse",
    "test_audit.py::test_embeddings_matcher_flags_planted_leak",
    "test_audit.py::test_audit_on_shards",
    "test_audit.py::test_facenet_release_weights_load[vggface2-facenet-vggface2]",
    "test_pipeline.py::test_run_completes_then_does_nothing",
    "test_pipeline.py::test_run_cli_json_and_release_gate",
    "test_precision.py::test_fp16_on_cpu_reproduces_nvidia_fp16_reference",
    "test_precision.py::test_fp16_batched_formulation_stays_close",
    "test_precision.py::test_fp16_reference_pngs_through_generate",
    # ~1-4 s each (measured on the idle VM with --durations=0), moved so make test stays near 30 s
    "test_gate.py::test_planted_near_copies_are_always_flagged",
    "test_audit.py::test_no_identity_overlap_skips_same_label",
    "test_cli_errors.py::test_generate_marker_that_is_not_an_object_is_refused_cleanly",
    "test_audit.py::test_facenet_release_weights_load[casia-webface-facenet-casia]",
    "test_audit.py::test_onnx_matcher_equals_torch_matcher",
    "test_audit.py::test_eer_and_threshold_match_sklearn",
    "test_precision.py::test_chunk_size_output_independent_of_batching_and_resume[fp16]",
    "test_interrupts.py::test_resume_removes_stale_align_temp_files",
    "test_precision.py::test_chunk_size_output_independent_of_batching_and_resume[fp32]",
    "test_real_matchers.py::test_dlib_rewarped_crop_matches_dlibs_own_chip",
    "test_precision.py::test_batched_inline_align_tries_the_same_seeds",
    "test_paths.py::test_png_shard_declaring_a_huge_image_is_refused_before_decoding",
    "test_audit.py::test_iresnet_weights_load_and_wrong_arch_named",
    "test_pickle_attacks.py::test_deep_tuples_and_cycles_are_refused",
    "test_array_files.py::test_decompression_bomb_is_refused",
    "test_pickle_attacks.py::test_cheap_opcodes_cannot_flood_memory_with_objects",
    "test_interrupts.py::test_full_disk_in_align_is_one_line_and_resumable",
    # export formats: make test keeps tarfile/DALI-index and pyarrow read-backs (~1.6 s, 0.7 s of it
    # importing pyarrow); the library read-backs and the jpg variant run with make test-slow
    "test_export_formats.py::test_parquet_loads_with_hugging_face_datasets",  # ~1 s, most of it importing datasets
    "test_export_formats.py::test_webdataset_library_reads_the_tars",
    "test_export_formats.py::test_jpg_image_format_in_both",
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if f"{item.path.name}::{item.name}" in SLOW:
            item.add_marker(pytest.mark.slow)
