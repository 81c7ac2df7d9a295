"""A short soak (300 images through one passive server process): nothing lost or altered, memory flat after
warm-up. The full 10,000-image run is scripts/soak_gadget.py (numbers in docs/reliability.md)."""

from __future__ import annotations

from script_modules import load_script

# Generous: glibc arenas and torch caches move RSS by ~10 % between samples; a leak of one image copy per image
# (300 x 64 KiB ~ 19 MiB on ~300 MiB) or of one slice batch per connection would still stay below it, but a leak of
# the decoded images themselves over the run, or of the per-connection threads, would not.
MAX_GROWTH_PERCENT = 30.0


def test_short_soak_loses_nothing_and_memory_stays_flat(throwaway_model_folder, tmp_path):
    soak = load_script("soak_gadget")
    samples: list[tuple[int, int]] = []
    result = soak.soak(images=300, phases=30, matrix=(128, 128), slices_per_connection=2,
                       models=throwaway_model_folder, warmup_fraction=0.4, samples=samples,
                       log_path=tmp_path / "server.log")
    assert result.images_in == 300
    assert result.lost_or_altered == 0, (tmp_path / "server.log").read_text()[-3000:]
    assert (result.copies_ok, result.copies_error) == (300, 0)
    assert len(samples) == 5
    assert result.growth_percent < MAX_GROWTH_PERCENT, samples
