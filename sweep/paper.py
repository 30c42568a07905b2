"""The paper's published numbers (shipped as package data) and the layout of its results tables."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import pandas as pd

__all__ = ["PAPER_TABLES", "PaperTable", "cell_model_name", "paper_results"]


@dataclass(frozen=True)
class PaperTable:
    """One results table of the paper: which cells it holds (the rows of paper_results.csv with this
    ``source``) and how it is laid out."""

    stem: str  # output file name, without extension
    source: str  # the ``source`` column of paper_results.csv
    title: str
    by_noise: bool = False  # rows are (noise, level), columns (dataset, push-pull): paper Table 2
    figure: str | None = None  # the paper figure drawn from the same cells


PAPER_TABLES: tuple[PaperTable, ...] = (
    PaperTable("table2", "paper Table 2", "WRN-28-10 on CIFAR-10 and CIFAR-100, all noises", by_noise=True),
    PaperTable("table3", "paper Table 3", "Sensitivity of WRN-16-10-PP to h and alpha, CIFAR-10, Gaussian noise"),
    PaperTable("supp_table1", "supplementary Table 1", "LeNet on MNIST, Gaussian noise", figure="Figure 4"),
    PaperTable("supp_table2", "supplementary Table 2", "LeNet on MNIST, contrast change and Poisson noise", figure="Figure 5"),
    PaperTable("supp_table3", "supplementary Table 3", "LeNet on MNIST, speckle noise", figure="Supplementary Figure 1"),
    PaperTable("supp_table4", "supplementary Table 4", "WRN-28-W on CIFAR-10, Poisson noise, by width", figure="Figure 6"),
    PaperTable("supp_table5", "supplementary Table 5", "WRN-L-10 on CIFAR-10, Poisson noise, by depth", figure="Figure 7"),
    PaperTable("supp_table6", "supplementary Table 6", "WRN-28-W on CIFAR-10, Gaussian noise, by width", figure="Figure 8"),
    PaperTable("supp_table7", "supplementary Table 7", "WRN-L-10 on CIFAR-10, Gaussian noise, by depth", figure="Figure 9"),
    PaperTable("supp_table8", "supplementary Table 8", "WRN-28-W on CIFAR-10, speckle noise, by width", figure="Supplementary Figure 2"),
    PaperTable("supp_table9", "supplementary Table 9", "WRN-L-10 on CIFAR-10, speckle noise, by depth", figure="Supplementary Figure 3"),
)


def cell_model_name(paper_model: str, pushpull: bool) -> str:
    """The paper's CSV names (``LeNet-A`` + pushpull) as model names (``PA``, ``WRN-28-10-PP``)."""
    if paper_model.startswith("LeNet-"):
        variant = paper_model.removeprefix("LeNet-")
        return f"P{variant}" if pushpull else variant
    return f"{paper_model}-PP" if pushpull else paper_model


def paper_results() -> pd.DataFrame:
    """Every cell of the paper's tables: source, dataset, model (``PA``, ``WRN-28-10-PP``), pushpull,
    h, alpha (NaN for plain models), noise, level, accuracy (percent), in the paper's order."""
    with resources.files("sweep").joinpath("reference/paper_results.csv").open() as f:
        frame = pd.read_csv(f, dtype={"pushpull": bool})
    frame["model"] = [cell_model_name(m, pp) for m, pp in zip(frame["model"], frame["pushpull"])]
    for column in ("h", "alpha", "level", "accuracy"):
        frame[column] = frame[column].astype("float64")
    return frame
