"""What every command shares: the Typer app and its one error handler, the options several commands take, and
the messages for failures."""

from __future__ import annotations

import inspect
import os
import time
from dataclasses import fields
from pathlib import Path
from typing import Annotated, Optional, get_args, get_type_hints

import typer
from rich.markup import escape

from pneumo import DISCLAIMER, __version__, paths
from pneumo.allocator import keep_freed_memory
from pneumo.console import console, errors
from pneumo.errors import PneumoError

STARTED = time.perf_counter()  # the process start, give or take the interpreter's own ~50 ms


class _Commands(typer.core.TyperGroup):
    """The one error handler: bad input anywhere in a command ends it with its message and exit code 2
    (``PNEUMO_DEBUG=1`` shows the traceback instead)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (PneumoError, ValueError, OSError) as error:
            if os.environ.get("PNEUMO_DEBUG"):  # the traceback, for a bug that looks like bad input
                raise
            raise fail(str(error)) from None
        except RuntimeError as error:
            if "torchvision::" not in str(error) or os.environ.get("PNEUMO_DEBUG"):
                raise
            raise fail(mismatched_torch(str(error))) from None


def mismatched_torch(error: str) -> str:
    """The message for torchvision's operators failing to load: a torch and torchvision from different builds."""
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    return (f"torch {installed('torch')} and torchvision {installed('torchvision')} are not a pair ({error.splitlines()[0]}):"
            " they come from different builds. Install both from one index, e.g. pip install --force-reinstall torch "
            "torchvision --index-url https://download.pytorch.org/whl/cpu (or both without --index-url)")


app = typer.Typer(
    cls=_Commands,
    help=f"Pediatric chest X-ray classification: normal, bacterial or viral pneumonia. {DISCLAIMER}",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


# Options several commands share. A command names one model with --model/-m; commands that take several
# (compare, report, ensemble) take them as arguments.
ModelOption = Annotated[Path, typer.Option("--model", "-m", help="A shipped model's name or folder, a run folder, a model.pt bundle or a .onnx file.",
                                           show_default=paths.DEFAULT_MODEL)]
RequiredModelOption = Annotated[Optional[Path], typer.Option("--model", "-m", help="A shipped model's folder, a run folder or a model.pt bundle (required: this command writes beside it).", show_default=False)]
BackendOption = Annotated[str, typer.Option(help="auto (ONNX Runtime where the model has an export), torch or onnx.")]
DataOption = Annotated[Path, typer.Option("--data", "-d", help="Data folder (organized or archive layout); default $PNEUMO_DATA or data/chest_xray.")]
CacheOption = Annotated[Path, typer.Option("--cache-dir", help="Preprocessing cache; default $PNEUMO_CACHE or cache/.")]
SizeOption = Annotated[int, typer.Option("--size", help="Image side in pixels after resizing.")]
RoleOption = Annotated[str, typer.Option("--split", help="Which images: test, val or train.")]
SplitFileOption = Annotated[Optional[Path], typer.Option(help="Split CSV giving the roles (default: the run's split.csv, else the archive's folders).")]
AdaptOption = Annotated[str, typer.Option(help="Adapt to these images as one site: none, priors (EM class mix), bn (BatchNorm statistics, AdaBN) or bn+priors.")]
ConformalOption = Annotated[Optional[float], typer.Option(help="Also give conformal class sets that hold the true class for >= 1-ALPHA of images of each class (e.g. 0.1).", metavar="ALPHA")]
ModelPinOption = Annotated[Optional[str], typer.Option(help="Refuse to run unless the model file the backend loads (model.pt, or the .onnx) has this sha256.", metavar="SHA256")]
PhiOption = Annotated[str, typer.Option(help="Patient identifiers (PatientID) in the answers: drop, hash (a pseudonym keyed by the site secret in $PNEUMO_PHI_KEY, the same in every run) or keep. Study, series and instance UIDs are kept: they link answers to the PACS.")]
ForceOption = Annotated[bool, typer.Option("--force", help="Classify images outside the model's scope too (colour pictures, non-radiograph DICOM, images far from every training X-ray) instead of refusing them.")]

# Commands that name one model take extra arguments only to refuse them, naming --model (see model_moved).
TAKES_MOVED_MODEL = {"allow_extra_args": True}


def show_version(value: bool) -> None:
    if value:
        console.print(f"pneumo {__version__}. {DISCLAIMER}")
        raise typer.Exit()


@app.callback()
def setup(
    version: Annotated[bool, typer.Option("--version", callback=show_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    # Before any work: faster PyTorch on a CPU (cnn training ~1.8x, inference 2x-3x);
    # pneumo.allocator says why.
    keep_freed_memory()
    quiet_libraries()


def quiet_libraries() -> None:
    """Keep the libraries' own warnings off the terminal: what matters reaches the user in pneumo's words.

    pydicom warns (and logs the same text) about odd but readable files, which either decode or get pneumo's
    error naming the file; scikit-learn warns about folds and classes too small on a tiny data set, whose wide
    confidence intervals the report shows.
    """
    import logging
    import warnings

    warnings.filterwarnings("ignore", module=r"pydicom(\.|$)")
    warnings.filterwarnings("ignore", category=UserWarning, module=r"sklearn(\.|$)")
    logging.getLogger("pydicom").setLevel(logging.ERROR)


def fail(message: str, code: int = 2) -> typer.Exit:
    errors.print(f"[red]error:[/red] {escape(message)}")
    return typer.Exit(code)


def model_moved(context: typer.Context) -> None:
    """Refuse a model given as an argument: every command names its model with --model."""
    if context.args:
        raise fail(f"name the model with --model {context.args[0]} (a command that takes one model names it with "
                   "--model/-m)")


def required_model(context: typer.Context, model: Optional[Path]) -> Path:
    """The --model of a command that writes beside its model, which therefore has no default."""
    model_moved(context)
    if model is None:
        raise fail("name the model to work on with --model (a run folder, a model.pt bundle or a models/ folder)")
    return model


def report_problems(problems, limit: int = 50) -> None:
    if not problems:
        return
    errors.print(f"[yellow]{len(problems)} file(s) could not be used:[/yellow]")
    for problem in problems[:limit]:
        errors.print(f"  {escape(problem.source)}: {escape(problem.reason)}")
    if len(problems) > limit:
        errors.print(f"  ... and {len(problems) - limit} more")


def adapt_mode(adapt: str, adapt_priors: bool) -> str:
    """The --adapt mode; the old --adapt-priors flag is refused with its replacement."""
    from pneumo.inference.adaptation import ADAPT_MODES

    if adapt_priors:
        raise fail("--adapt-priors is now --adapt priors (and --adapt bn+priors for both)")
    if adapt not in ADAPT_MODES:
        raise fail(f"unknown --adapt {adapt!r}; choose one of {', '.join(ADAPT_MODES)}")
    return adapt


def config_flags(*sections: str) -> list[inspect.Parameter]:
    """One flag per option of the training configuration's ``sections`` (all of them by default), by its flat name,
    with the help and default its field declares (pneumo.config): the configuration is the one place an option is
    described. Each flag defaults to None, "not given", so that a preset's value or the field's default stands."""
    from pneumo.config import FLAT, SECTIONS

    parameters = []
    for flat, (section, name) in FLAT.items():
        if sections and section not in sections:
            continue
        spec = next(item for item in fields(SECTIONS[section]) if item.name == name)
        if "help" not in spec.metadata:
            raise TypeError(f"the configuration option {section}.{name} has no help: declare it in its field")
        kind = get_type_hints(SECTIONS[section])[name]
        kind = next((arg for arg in get_args(kind) if arg is not type(None)), kind)  # str | None -> str
        flag = "--" + flat.replace("_", "-")
        names = (f"{flag}/--no-{flat.replace('_', '-')}",) if kind is bool else (flag, *_SHORT.get(flat, ()))
        shown = _SHOWN.get(flat, str(spec.default) if spec.default is not None else False)
        option = typer.Option(*names, help=spec.metadata["help"], rich_help_panel=_PANELS[section], show_default=shown)
        parameters.append(inspect.Parameter(flat, inspect.Parameter.KEYWORD_ONLY, default=None,
                                            annotation=Annotated[Optional[kind], option]))
    return parameters


_PANELS = {"data": "Data and split", "model": "Model", "optim": "Optimisation", "augment": "Augmentation",
           "hardware": "Hardware", "distill": "Distillation"}
_SHORT = {"data": ("-d",)}
_SHOWN = {"data": "$PNEUMO_DATA or data/chest_xray", "cache_dir": "$PNEUMO_CACHE or cache"}
