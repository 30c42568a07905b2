"""The paper's published numbers (shipped as package data), the layout of its results tables, and what
each printed cell measured where that differs from its header (:func:`paper_cells`)."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import pandas as pd

from models import pushpull_name

__all__ = [
    "PAPER_TABLES",
    "READINGS",
    "PaperTable",
    "cell_model_name",
    "paper_cells",
    "paper_direction",
    "paper_results",
]


@dataclass(frozen=True)
class PaperTable:
    """One results table of the paper: which cells it holds (the rows of paper_results.csv with this
    ``source``) and how it is laid out."""

    stem: str  # output file name, without extension
    source: str  # the ``source`` column of paper_results.csv
    title: str
    by_noise: bool = False  # rows are (noise, level), columns (dataset, push-pull): paper Table 2
    figure: str | None = None  # the paper figure drawn from the same cells
    figure_stem: str | None = None  # its PNG's file name, without extension


PAPER_TABLES: tuple[PaperTable, ...] = (
    PaperTable("table2", "paper Table 2", "WRN-28-10 on CIFAR-10 and CIFAR-100, all noises", by_noise=True),
    PaperTable("table3", "paper Table 3", "Sensitivity of WRN-16-10-PP to h and alpha, CIFAR-10, Gaussian noise"),
    PaperTable(
        "supp_table1",
        "supplementary Table 1",
        "LeNet on MNIST, Gaussian noise",
        figure="Figure 4",
        figure_stem="figure4_gaussian",
    ),
    PaperTable(
        "supp_table2",
        "supplementary Table 2",
        "LeNet on MNIST, contrast change and Poisson noise",
        figure="Figure 5",
        figure_stem="figure5_poisson",
    ),
    PaperTable(
        "supp_table3",
        "supplementary Table 3",
        "LeNet on MNIST, speckle noise",
        figure="Supplementary Figure 1",
        figure_stem="supp_figure1_speckle",
    ),
    PaperTable(
        "supp_table4",
        "supplementary Table 4",
        "WRN-28-W on CIFAR-10, Poisson noise, by width",
        figure="Figure 6",
        figure_stem="figure6_poisson_width",
    ),
    PaperTable(
        "supp_table5",
        "supplementary Table 5",
        "WRN-L-10 on CIFAR-10, Poisson noise, by depth",
        figure="Figure 7",
        figure_stem="figure7_poisson_depth",
    ),
    PaperTable(
        "supp_table6",
        "supplementary Table 6",
        "WRN-28-W on CIFAR-10, Gaussian noise, by width",
        figure="Figure 8",
        figure_stem="figure8_gaussian_width",
    ),
    PaperTable(
        "supp_table7",
        "supplementary Table 7",
        "WRN-L-10 on CIFAR-10, Gaussian noise, by depth",
        figure="Figure 9",
        figure_stem="figure9_gaussian_depth",
    ),
    PaperTable(
        "supp_table8",
        "supplementary Table 8",
        "WRN-28-W on CIFAR-10, speckle noise, by width",
        figure="Supplementary Figure 2",
        figure_stem="supp_figure2_speckle_width",
    ),
    PaperTable(
        "supp_table9",
        "supplementary Table 9",
        "WRN-L-10 on CIFAR-10, speckle noise, by depth",
        figure="Supplementary Figure 3",
        figure_stem="supp_figure3_speckle_depth",
    ),
)


def cell_model_name(paper_model: str, pushpull: bool) -> str:
    """The paper's CSV names (``LeNet-A`` + pushpull) as model names (``PA``, ``WRN-28-10-PP``)."""
    plain = paper_model.removeprefix("LeNet-")
    return pushpull_name(plain) if pushpull else plain


def paper_results() -> pd.DataFrame:
    """Every cell of the paper's tables: source, dataset, model (``PA``, ``WRN-28-10-PP``), pushpull,
    h, alpha (NaN for plain models), noise, level, accuracy (percent), in the paper's order."""
    with resources.files("sweep").joinpath("reference/paper_results.csv").open() as f:
        frame = pd.read_csv(f, dtype={"pushpull": bool})
    frame["model"] = [cell_model_name(m, pp) for m, pp in zip(frame["model"], frame["pushpull"])]
    for column in ("h", "alpha", "level", "accuracy"):
        frame[column] = frame[column].astype("float64")
    return frame


# How a printed cell can be read. "header": the level its column header prints. "text": supplementary Table
# 2's Poisson columns read as the contrasts Sec. 4.1 discusses (A and D drop "when the contrast level is
# lower than C = 0.5", B and C are stable "when the contrast level is 0.5 and 0.4"), levels its header
# 0.5 1 1.5 2 2.5 does not contain; its values also fall with the printed C where the CIFAR tables rise.
# "swapped": main-text Table 2's CIFAR Poisson columns C = 1.5 and 2.5 read the other way round. For
# CIFAR-10, supplementary Tables 4 and 5 print the same numbers under the swapped headers, and there every
# one of their 16 rows rises from C = 1.5 to C = 2 (Table 2's plain WRN-28-10 falls as printed); Table 2's
# CIFAR-100 columns, which no supplementary table prints, fall from C = 1.5 to 2 to 2.5 for both models.
READINGS = {
    "header": "the level the column header prints",
    "text": "supplementary Table 2's Poisson columns 0.5, 1, 1.5, 2, 2.5 read as C = 1, 0.5, 0.4, 0.3, 0.2 (Sec. 4.1)",
    "swapped": "Table 2's CIFAR Poisson columns C = 1.5 and 2.5 read swapped, as supplementary Tables 4-5 print them",
}
_TEXT_READING = {0.5: 1.0, 1.0: 0.5, 1.5: 0.4, 2.0: 0.3, 2.5: 0.2}
_CIFAR_C1_NOTE = (
    "the paper applied no noise at C = 1 (its value equals the model's clean accuracy in all 20 CIFAR cells): "
    "compared with our clean accuracy"
)
_HEADER_NOTE = "read as the header prints it: C = {printed:g} (the text reading takes this column as C = {text:g})"
_TEXT_NOTE = "read as Sec. 4.1 describes: the column printed C = {printed:g} taken as C = {level:g}"
_SWAPPED = {1.5: 2.5, 2.5: 1.5}
_SWAP_EVIDENCE = {
    "cifar10": "supplementary Tables 4-5 print this value under C = {other:g}",
    "cifar100": "no supplementary table prints CIFAR-100; CIFAR-10's same two columns are swapped against "
    "supplementary Tables 4-5",
}
_SWAP_HEADER_NOTE = (
    "read as the header prints it: C = {printed:g}; {evidence} (the swapped reading takes this column as C = {other:g})"
)
_SWAP_NOTE = "read swapped: the column printed C = {printed:g} taken as C = {other:g}; {evidence}"


def paper_direction(difference: float) -> str:
    """What the paper says of push-pull from its push-pull minus plain ``difference``: ``higher`` (above 0),
    ``lower`` (below 0), ``neither`` (exactly 0: the paper prints the same number for both), "" for none (NaN)."""
    if difference != difference:  # NaN
        return ""
    return "higher" if difference > 0 else "lower" if difference < 0 else "neither"


def paper_cells() -> pd.DataFrame:
    """Every printed cell with the measurement it is to be compared with, once per reading of it.

    Columns: the columns of :func:`paper_results` (``noise`` and ``level`` as printed) plus ``reading`` (a
    key of :data:`READINGS`), ``measured_noise`` and ``measured_level`` (the cell of ours it means) and
    ``protocol_note`` ("" where the cell means what its header says). CIFAR Poisson C = 1 cells mean the
    clean test set; supplementary Table 2's Poisson cells appear twice, under the header and the text reading;
    Table 2's CIFAR-10 and CIFAR-100 Poisson C = 1.5 and 2.5 cells twice, under the header and the swapped
    reading (:data:`READINGS`).
    """
    printed = paper_results()
    cells = printed.assign(
        reading="header", measured_noise=printed["noise"], measured_level=printed["level"], protocol_note=""
    )
    cifar_c1 = cells["dataset"].str.startswith("cifar") & (cells["noise"] == "poisson") & (cells["level"] == 1.0)
    cells.loc[cifar_c1, ["measured_noise", "measured_level", "protocol_note"]] = ["clean", 0.0, _CIFAR_C1_NOTE]
    mnist_poisson = (cells["source"] == "supplementary Table 2") & (cells["noise"] == "poisson")
    cells.loc[mnist_poisson, "protocol_note"] = [
        _HEADER_NOTE.format(printed=p, text=_TEXT_READING[p]) for p in cells.loc[mnist_poisson, "level"]
    ]
    text = cells[mnist_poisson].copy()
    text["reading"] = "text"
    text["measured_level"] = text["level"].map(_TEXT_READING)
    text["protocol_note"] = [
        _TEXT_NOTE.format(printed=p, level=m) for p, m in zip(text["level"], text["measured_level"])
    ]
    table2_swapped = (
        (cells["source"] == "paper Table 2") & (cells["noise"] == "poisson") & cells["level"].isin(list(_SWAPPED))
    )
    evidence = [
        _SWAP_EVIDENCE[d].format(other=_SWAPPED[p])
        for d, p in zip(cells.loc[table2_swapped, "dataset"], cells.loc[table2_swapped, "level"])
    ]
    cells.loc[table2_swapped, "protocol_note"] = [
        _SWAP_HEADER_NOTE.format(printed=p, other=_SWAPPED[p], evidence=e)
        for p, e in zip(cells.loc[table2_swapped, "level"], evidence)
    ]
    swapped = cells[table2_swapped].copy()
    swapped["reading"] = "swapped"
    swapped["measured_level"] = swapped["level"].map(_SWAPPED)
    swapped["protocol_note"] = [
        _SWAP_NOTE.format(printed=p, other=_SWAPPED[p], evidence=e) for p, e in zip(swapped["level"], evidence)
    ]
    return pd.concat([cells, text, swapped], ignore_index=True)
