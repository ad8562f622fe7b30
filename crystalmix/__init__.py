"""crystalmix: rebuild (and better) the data pipeline behind LLM360's CrystalCoder and CrystalChat.

`crystalmix.core` is the floor both wings (`sft_builder`, `pretrain`) stand on; `crystalmix.cli` is the door.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("crystalmix")
except PackageNotFoundError:  # running from a checkout that was never installed
    __version__ = "0.0.0+unknown"
