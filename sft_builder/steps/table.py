"""The one list of build steps: name -> config class, step class, scope. Adding a step is a module and a row.

The manifest reads it for the keys of ``steps:`` and their settings, the build to make the steps, the
report and the export for the order steps are shown in. Scope says how a step runs:

- ``record``: decides one conversation at a time; made per source as ``step(config)``, and runs inside each
  source's ingest stage when it comes before the first ``global`` step.
- ``global``: needs every source at once (dedup); made once as ``step(config, skip_sources=...)``, and only
  ``enabled`` may differ per source.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from sft_builder.steps.clean import Clean, CleanConfig
from sft_builder.steps.decontaminate import Decontaminate, DecontaminateConfig
from sft_builder.steps.dedup import ExactDedup, ExactDedupConfig, NearDedup, NearDedupConfig
from sft_builder.steps.language import Language, LanguageConfig
from sft_builder.steps.quality import Quality, QualityConfig

Scope = Literal["record", "global"]


@dataclass(frozen=True, slots=True)
class StepSpec:
    name: str
    config: type
    step: type
    scope: Scope

    def make(self, config: Any, skip_sources: tuple[str, ...] = ()) -> Any:
        """The step object for `config` (a global step skips the sources that turned it off)."""
        if self.scope == "global":
            return self.step(config, skip_sources=skip_sources)
        return self.step(config)


# In the order the report and the dataset card list them (a manifest runs them in its own order).
STEPS: dict[str, StepSpec] = {s.name: s for s in (
    StepSpec("clean", CleanConfig, Clean, "record"),
    StepSpec("language", LanguageConfig, Language, "record"),
    StepSpec("quality", QualityConfig, Quality, "record"),
    StepSpec("exact_dedup", ExactDedupConfig, ExactDedup, "global"),
    StepSpec("near_dedup", NearDedupConfig, NearDedup, "global"),
    StepSpec("decontaminate", DecontaminateConfig, Decontaminate, "record"),
)}

def stage_order() -> tuple[str, ...]:
    """Every stage a record passes, in the order the report and the dataset card list them."""
    return ("adapter", *STEPS, "mix")
