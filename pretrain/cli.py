"""`crystalmix pretrain ...`: the pretraining sub-app."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True, help="Pretraining stages 1-3: tokenize, FIM, pack to HDF5.")
