"""Registry of the IQA benchmarks used by the Tool-IQA paper.

Each entry records what a loader needs to put a dataset's raw scores on a
common footing: the MOS range, its direction (MOS, higher is better, versus
DMOS, lower is better), the kind of distortions, whether reference images
exist, and where the values come from.

Values marked ``confirmed=False`` could not be checked against the dataset's
own paper or release; for those ``mos_range`` is ``None`` and the loader infers
the range from the data (min/max), which is also what VisualQuality-R1's data
preparation does for every dataset. Correlation metrics (SRCC/KRCC, and PLCC
after any linear map) do not depend on that choice.

Names are matched case- and punctuation-insensitively against the display
name, the key and the aliases (``"LIVE Challenge"``, ``"live_challenge"``,
``"livec"`` and ``"CLIVE"`` are the same benchmark).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

__all__ = [
    "BENCHMARKS",
    "Benchmark",
    "UnknownBenchmarkError",
    "canonical",
    "find",
    "lookup",
    "suggest",
]


class UnknownBenchmarkError(KeyError, ValueError):
    """A benchmark name that the registry does not know (message names the closest one)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown benchmark"


@dataclass(frozen=True)
class Benchmark:
    """One benchmark: how its scores are scaled and where that is documented.

    ``mos_range`` is the nominal scale of the released labels (``None``: not
    confirmed, infer from the data). ``alt_ranges`` are other scales that common
    label files use for the same images (e.g. pyiqa stores KonIQ-10k MOS on
    0-100); the loader picks the first range that contains all the data.
    """

    key: str
    display_name: str
    aliases: tuple[str, ...]
    mos_range: tuple[float, float] | None
    higher_better: bool
    kind: str
    full_reference: bool
    n_images: int | None
    source: str
    confirmed: bool = True
    alt_ranges: tuple[tuple[float, float], ...] = ()

    def ranges(self) -> tuple[tuple[float, float], ...]:
        """The nominal range followed by the alternatives (empty when unconfirmed)."""
        return ((self.mos_range,) if self.mos_range else ()) + self.alt_ranges


def canonical(name: str) -> str:
    """Lower-case ``name`` and drop everything but letters and digits."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


BENCHMARKS: tuple[Benchmark, ...] = (
    Benchmark(
        key="koniq10k",
        display_name="KonIQ-10k",
        aliases=("koniq", "koniq-10k", "koniq_10k"),
        mos_range=(1.0, 5.0),
        alt_ranges=((0.0, 100.0),),
        higher_better=True,
        kind="authentic",
        full_reference=False,
        n_images=10073,
        source="Hosu et al., TIP 2020: MOS on a 1-5 ACR scale (koniq10k_scores_and_distributions.csv); "
        "pyiqa's meta_info_KonIQ10kDataset.csv stores the 0-100 rescaled MOS instead",
    ),
    Benchmark(
        key="spaq",
        display_name="SPAQ",
        aliases=("spaq11k",),
        mos_range=(0.0, 100.0),
        higher_better=True,
        kind="authentic",
        full_reference=False,
        n_images=11125,
        source="Fang et al., CVPR 2020: smartphone photos, MOS on a 0-100 slider; pyiqa lists (1, 100)",
    ),
    Benchmark(
        key="livec",
        display_name="LIVE Challenge",
        aliases=("clive", "live_challenge", "livechallenge", "live-c", "livewild", "live_itw"),
        mos_range=(0.0, 100.0),
        higher_better=True,
        kind="authentic",
        full_reference=False,
        n_images=1162,
        source="Ghadiyaram & Bovik, TIP 2016: crowdsourced MOS on a 0-100 slider; pyiqa lists (1, 100)",
    ),
    Benchmark(
        key="bid",
        display_name="BID",
        aliases=("blurred_image_database", "bid2011"),
        mos_range=(0.0, 5.0),
        higher_better=True,
        kind="authentic",
        full_reference=False,
        n_images=586,
        source="Ciancio et al., TIP 2011: blurred photos rated on a 0-5 scale",
    ),
    Benchmark(
        key="liu13",
        display_name="Liu13 (deblurring)",
        aliases=("deblur", "deblurring", "liu2013", "liu13_deblur", "motion_deblurring"),
        mos_range=None,
        higher_better=True,
        kind="algorithmic",
        full_reference=True,
        n_images=None,
        source="Liu et al., ACM TOG 32(6) 2013: motion-deblurring results with user-study scores; "
        "VisualQuality-R1 labels are 'ref dis mos' lines, treated as higher-is-better (not flipped)",
        confirmed=False,
    ),
    Benchmark(
        key="sriqabench",
        display_name="SRIQA-Bench",
        aliases=("sriqa", "sriqa_bench", "sr_iqa", "srbench"),
        mos_range=None,
        higher_better=True,
        kind="algorithmic",
        full_reference=True,
        n_images=None,
        source="Chen, Wu, Ma & Zhang, CVPR 2025 (A-FINE): outputs of ten super-resolution methods "
        "with human quality annotations; score scale not confirmed",
        confirmed=False,
    ),
    Benchmark(
        key="min19",
        display_name="Min19 (dehazing)",
        aliases=("dehaze", "dehazing", "shrq", "dhq", "min2019", "min19_dehaze"),
        mos_range=None,
        higher_better=True,
        kind="algorithmic",
        full_reference=True,
        n_images=600,
        source="Min et al., TMM 2019 (SHRQ): 360 regular + 240 aerial dehazed images from 8 "
        "dehazing methods; VisualQuality-R1 labels are 'ref dis mos', higher-is-better; scale not confirmed",
        confirmed=False,
    ),
    Benchmark(
        key="kadid10k",
        display_name="KADID-10K",
        aliases=("kadid", "kadid-10k", "kadid_10k"),
        mos_range=(1.0, 5.0),
        higher_better=True,
        kind="synthetic",
        full_reference=True,
        n_images=10125,
        source="Lin, Hosu & Saupe, QoMEX 2019: 81 references x 25 distortions x 5 levels, 1-5 ACR "
        "scale; the 'dmos' column is higher-is-better (I01_01_01.png = 4.57); pyiqa: (1, 5), mos",
    ),
    Benchmark(
        key="agiqa3k",
        display_name="AGIQA-3K",
        aliases=("agiqa", "agiqa-3k", "agiqa_3k"),
        mos_range=(0.0, 5.0),
        higher_better=True,
        kind="aigc",
        full_reference=False,
        n_images=2982,
        source="Li et al., TCSVT 2023: perceptual-quality MOS (mos_quality) of AI-generated images "
        "on 0-5 (observed 0.0-4.49)",
    ),
    Benchmark(
        key="pipal",
        display_name="PIPAL",
        aliases=("pipal_train", "ntire2021_iqa"),
        mos_range=None,
        higher_better=True,
        kind="algorithmic",
        full_reference=True,
        n_images=23200,
        source="Gu et al., ECCV 2020: Elo scores from pairwise preferences (pyiqa column "
        "'elo_score', about 1000-1700); Elo has no fixed bounds, so the range is inferred",
        confirmed=False,
    ),
    Benchmark(
        key="tid2013",
        display_name="TID2013",
        aliases=("tid", "tid_2013"),
        mos_range=(0.0, 9.0),
        higher_better=True,
        kind="synthetic",
        full_reference=True,
        n_images=3000,
        source="Ponomarenko et al., SPIC 2015: 25 references x 24 distortions x 5 levels, MOS 0-9; "
        "pyiqa: (0, 9), mos",
    ),
    Benchmark(
        key="livefb",
        display_name="LIVEFB (FLIVE)",
        aliases=("flive", "live_fb", "paq2piq", "livefb_flive"),
        mos_range=(0.0, 100.0),
        higher_better=True,
        kind="authentic",
        full_reference=False,
        n_images=39810,
        source="Ying et al., CVPR 2020 (PaQ-2-PiQ): ~40k pictures, MOS on a 0-100 slider; "
        "pyiqa lists (1, 100)",
    ),
)


def _index() -> dict[str, Benchmark]:
    """Map every canonical name (key, display name, aliases) to its benchmark."""
    table: dict[str, Benchmark] = {}
    for b in BENCHMARKS:
        for name in (b.key, b.display_name, *b.aliases):
            table.setdefault(canonical(name), b)
    return table


_INDEX = _index()


def find(name: str) -> Benchmark | None:
    """The benchmark called ``name`` (any spelling of a known name), or ``None``."""
    return _INDEX.get(canonical(name))


def suggest(name: str) -> str | None:
    """The display name of the benchmark whose name is closest to ``name``, if any is close."""
    hits = difflib.get_close_matches(canonical(name), list(_INDEX), n=1, cutoff=0.5)
    return _INDEX[hits[0]].display_name if hits else None


def lookup(name: str) -> Benchmark:
    """The benchmark called ``name``; raises :class:`UnknownBenchmarkError` naming the closest."""
    bench = find(name)
    if bench is not None:
        return bench
    close = suggest(name)
    hint = f"; did you mean {close!r}?" if close else ""
    known = ", ".join(b.display_name for b in BENCHMARKS)
    raise UnknownBenchmarkError(f"unknown benchmark {name!r}{hint} (known: {known})")
