"""What a corpus job says when it ends (`Summary.describe`), or the one line it fails with when every row failed
(`Summary.failure`): counted by the runner (runner.py), printed by the CLI (command.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from coulisse.interfaces.formatting import count, duration
from coulisse.interfaces.jobs.formats import STDIO


@dataclass
class Summary:
    output: str
    rows: int = 0
    classified: int = 0
    errored: int = 0
    truncated: int = 0
    resumed_from: int = 0
    verb: str = "classified"
    seconds: float = 0.0  # this run's chunk loop (read, classify, commit, finish): what the rate divides
    load_seconds: float = 0.0  # loading the model, before the loop
    error_column: str = "error"  # where the error rows say why (`coulisse_error` when the input has `error`)
    first_error: str | None = None  # this run's first error row's reason
    long_text: str = "truncate"  # classify: what `truncated` counts (cut texts, or texts read in windows)
    precision: str = ""  # what the weights ran in (`state.precision`): said unless float32
    finished: bool = False  # the output was complete when this run started: it only removed the job's leftovers

    @property
    def rows_per_second(self) -> float:
        done = self.rows - self.resumed_from
        return done / self.seconds if self.seconds > 0 else 0.0

    def describe(self) -> str:
        if self.finished:
            return (f"nothing left to do: {self.output} was complete ({count(self.classified, 'row')} {self.verb}, "
                    f"{self.errored:,} errored); finished tidying up after the job, stopped at its very end.")
        text = f"{count(self.classified, 'row')} {self.verb}, {self.errored:,} errored"
        if self.errored:
            text += f" (see {self.errors_at(named=False)})"
        if self.resumed_from:
            text += f"; resumed after {count(self.resumed_from, 'row')}"
        done = self.rows - self.resumed_from
        text += f"; {count(done, 'row')} in {duration(self.seconds)} ({self.rows_per_second:,.1f} rows/s"
        text += f", after {duration(self.load_seconds)} loading the model" if self.load_seconds else ""
        text += f"; {self.precision} weights)" if self.precision not in ("", "float32") else ")"
        if self.truncated and self.long_text == "chunk":
            text += (f". {count(self.truncated, 'text')} {'was' if self.truncated == 1 else 'were'} longer than the "
                     "model's token limit: read in overlapping windows, their logits averaged")
        elif self.truncated:
            # counted by length: a text of exactly the limit lost nothing, one beyond it was cut there (audit 43)
            text += (f". {count(self.truncated, 'text')} reached the model's token limit, the part past it "
                     "cut")
            if self.verb == "classified":
                text += f" (--long-text chunk reads {'it' if self.truncated == 1 else 'them'} whole)"
        return text + (f" -> {self.output}" if self.output != STDIO else "")

    def errors_at(self, named: bool = True) -> str:
        """Where the error rows' reasons are; `named`: with the output they are in."""
        if self.output.lower().endswith(".npy"):  # no columns: the errors file beside it lists them
            return f"{self.output if named else Path(self.output).name}.errors.jsonl"
        where = "" if not named else " on stdout" if self.output == STDIO else f" of {self.output}"
        return f"the {self.error_column} column{where}"

    def failure(self) -> str | None:
        """None when some row got a result (or there was no row); else the one line a failed job exits
        with: every row is an error row, so the output holds nothing but reasons."""
        if self.rows == 0 or self.classified > 0:
            return None
        first = f"; the first: {self.first_error}" if self.first_error else ""
        return (f"every row failed ({self.errored:,} of {count(self.rows, 'row')} errored{first}); the reasons are "
                f"in {self.errors_at()}.")
