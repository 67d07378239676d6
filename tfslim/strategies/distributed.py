"""`tfslim.shrink`'s candidates spread over KerasTuner's distributed mode (chief + workers).

KerasTuner distributes a search by environment variables, and so does `shrink`: every
process runs the same script with the same model, data and settings; the one whose
`KERASTUNER_TUNER_ID` contains `"chief"` serves an oracle over gRPC at
`KERASTUNER_ORACLE_IP:KERASTUNER_ORACLE_PORT`, the others (`"tuner0"`, `"tuner1"`, ...)
ask it for trials. Here each candidate is one trial of a `CandidateOracle`: the chief
hands out every candidate its manifest does not hold yet, each once, one per request; a
worker makes, converts and measures it into the shared `directory`, records it in the
manifest (merged under a lock, see `Run`) and reports its quality and footprint figures
as the trial's metrics. When every trial has ended, the chief reads the manifest back and
writes the report, so its result holds the candidates one process would have made.

The trials run through KerasTuner's own `BaseTuner.search`, so its rules apply: the chief
waits for workers (it makes no candidate while serving), a worker restarted with the same
`KERASTUNER_TUNER_ID` is handed back the trial it was interrupted in, and the chief
returns once every worker has been told to stop. A candidate a worker fails to make is
marked failed (its error is in the worker's log and the trial's message) and made by the
chief after serving, so a lasting error is raised where the run is reported. A stopped
run resumes as a single-process one does: a restarted chief hands out only what the
manifest lacks.
"""

import os

import keras_tuner

from tfslim.strategies.result import StrategyResult
from tfslim.strategies.run import TUNER_PROJECT

__all__ = ["CandidateOracle", "role", "serve", "work"]

_ENV = ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT")
# Figures a trial reports to the oracle (numbers only: they travel over gRPC).
_METRICS = ("quality", "flash_bytes", "gzip_bytes", "arena_bytes", "params", "macs", "latency_ms")


def role() -> str | None:
    """None outside KerasTuner's distributed mode, `"chief"`, or the worker's tuner id.

    The same rule as KerasTuner's: distributed when `KERASTUNER_ORACLE_IP` is set, then
    `KERASTUNER_ORACLE_PORT` and `KERASTUNER_TUNER_ID` must be too; the chief is the
    process whose tuner id contains `"chief"`.

    Raises:
        ValueError: if `KERASTUNER_ORACLE_IP` is set without the other two.
    """
    if "KERASTUNER_ORACLE_IP" not in os.environ:
        return None
    missing = [name for name in _ENV if not os.environ.get(name)]
    if missing:
        given = {name: os.environ.get(name) for name in _ENV}
        raise ValueError(
            "Invalid environment for KerasTuner's distributed mode. Expected "
            f"{', '.join(_ENV)} all set (the chief's tuner id contains 'chief', workers' "
            f"are e.g. 'tuner0'); missing {', '.join(missing)}. Received: {given}"
        )
    tuner_id = os.environ["KERASTUNER_TUNER_ID"]
    return "chief" if "chief" in tuner_id else tuner_id


class CandidateOracle(keras_tuner.Oracle):
    """Hands out each of `names` as one trial, once, in order, then stops.

    The trial's one hyperparameter, `"candidate"`, is the candidate's name; its objective
    is the converted model's quality.

    Args:
        names: list of str. The candidates to hand out (may be empty).
    """

    def __init__(self, names: list):
        hyperparameters = keras_tuner.HyperParameters()
        if names:
            hyperparameters.Choice("candidate", list(names), ordered=False)
        super().__init__(
            objective=keras_tuner.Objective("quality", "max"),
            hyperparameters=hyperparameters,
            # A failed candidate is made by the chief afterwards: never stop the search.
            max_consecutive_failed_trials=len(names) + 1,
        )
        self.names = list(names)

    def populate_space(self, trial_id):
        handed = {t.hyperparameters.values.get("candidate") for t in self.trials.values()}
        left = [name for name in self.names if name not in handed]
        if not left:
            return {"status": keras_tuner.engine.trial.TrialStatus.STOPPED}
        return {
            "status": keras_tuner.engine.trial.TrialStatus.RUNNING,
            "values": {"candidate": left[0]},
        }


class _CandidateTuner(keras_tuner.engine.base_tuner.BaseTuner):
    """Runs each trial the oracle hands out as one candidate of `run`."""

    def __init__(self, oracle, run, specs, make, data, settings, *, overwrite):
        super().__init__(
            oracle,
            directory=str(run.directory),
            project_name=TUNER_PROJECT,
            overwrite=overwrite,
        )
        self.run, self.specs, self.make = run, {s.name: s for s in specs}, make
        self.data, self.settings = data, settings

    def on_search_begin(self):
        # Only workers get here (the chief serves instead). The oracle answers once the
        # chief serves, and the chief writes its manifest first: check it is this run.
        self.oracle.get_space()
        self.run.join(self.run.key)

    def run_trial(self, trial, *args, **kwargs):
        name = trial.hyperparameters.values.get("candidate")
        spec = self.specs.get(name)
        if spec is None:
            message = (
                f"{self.tuner_id}: the chief handed out candidate {name!r}, which this "
                f"process does not plan; it plans {list(self.specs)}. Run every process "
                "with the same techniques, widths, sparsity and clusters"
            )
            self.run.log(message)
            raise keras_tuner.errors.FailedTrialError(message)
        self.run.refresh()
        try:
            candidate = self.run.candidate(spec, lambda: self.make(spec), *self.data, self.settings)
        except Exception as e:
            self.run.log(f"{name} failed on {self.tuner_id}: {type(e).__name__}: {e}")
            raise keras_tuner.errors.FailedTrialError(f"{name}: {type(e).__name__}: {e}") from e
        figures = candidate.footprint.to_dict()
        return {k: float(figures[k]) for k in _METRICS if figures.get(k) is not None}


def serve(run, specs, make, data, settings) -> None:
    """The chief: publishes the manifest, serves every unfinished candidate as a trial
    until all have ended, then reads back what the workers recorded."""
    run.write_manifest(merge=False)
    todo = [spec.name for spec in specs if not run.finished(spec)]
    tuner = _CandidateTuner(CandidateOracle(todo), run, specs, make, data, settings, overwrite=True)
    tuner.search(verbose=0)
    run.refresh()


def work(run, key, specs, make, data, settings, baseline: str) -> StrategyResult:
    """A worker: makes the candidates the chief hands out until it says stop.

    Returns the `StrategyResult` of this worker's candidates alone, with no report files
    (the chief writes the report of all of them).
    """
    run.key = key
    tuner_id = os.environ["KERASTUNER_TUNER_ID"]
    # A worker keeps no state of its own in KerasTuner's tuner file; an old one would only
    # make BaseTuner print that it reloads it.
    (run.directory / TUNER_PROJECT / f"{tuner_id}.json").unlink(missing_ok=True)
    names = [spec.name for spec in specs]
    tuner = _CandidateTuner(
        CandidateOracle(names), run, specs, make, data, settings, overwrite=False
    )
    tuner.search()
    return run.result(
        baseline,
        notes=[
            f"Worker {tuner_id} of a distributed run: its own candidates only; the chief "
            "writes the report of all of them."
        ],
    )
