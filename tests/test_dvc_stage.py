"""`handbone dvc-stage`, the command of every DVC stage: which snakemake
calls it makes in a checkout with and without Snakemake's records, and that
every stage of dvc.yaml depends on each handbone module its command runs.
That the calls do what they should (a queued experiment reruns only its
stages, and retrains) is tested end to end in test_dvc.py."""

import ast
import posixpath
import re
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from package_imports import handbone_imports, import_graph

from conftest import snakemake_command
from handbone.dvc_stage import run_stage
from handbone.errors import HandboneError

TOUCH = ["snakemake", "--cores", "1", "--touch", "--no-hooks", "--quiet", "all", "--until"]


class Recorder:
    def __init__(self, failing: str | None = None):
        self.commands = []
        self.failing = failing

    def __call__(self, command):
        self.commands.append(command)
        return 1 if self.failing and self.failing in command else 0


@pytest.fixture
def checkout(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_checkout_without_records_reruns_each_stage_fully_the_first_time_only(checkout):
    """A queued experiment's copy: no .snakemake/ at all."""
    first = Recorder()
    run_stage("train@tiny", ["preprocess", "split"], ["--cores", "all", "target"], runner=first)
    assert first.commands == [
        TOUCH + ["preprocess", "split", "--forceall"],
        ["snakemake", "--cores", "all", "target"],
    ]
    # The next stage in the same copy has no records of its own either ...
    following = Recorder()
    run_stage("cv", ["cv_model"], ["--cores", "all", "--until", "cv_summary"], runner=following)
    assert following.commands[0] == TOUCH + ["cv_model", "--forceall"]
    # ... but a stage that ran here once (killed, say) resumes from Snakemake's records.
    again = Recorder()
    run_stage("train@tiny", ["preprocess", "split"], ["--cores", "all", "target"], runner=again)
    assert again.commands[0] == TOUCH + ["preprocess", "split"]


def test_a_checkout_where_snakemake_ran_only_puts_the_earlier_stages_times_in_order(checkout):
    (checkout / ".snakemake" / "metadata").mkdir(parents=True)
    recorder = Recorder()
    run_stage("predict", ["train"], ["--cores", "all", "--until", "predict_oof"], runner=recorder)
    assert recorder.commands == [TOUCH + ["train"], ["snakemake", "--cores", "all", "--until", "predict_oof"]]


def test_the_first_stage_forces_its_own_jobs_and_touches_nothing(checkout):
    recorder = Recorder()
    run_stage("data", [], ["--cores", "all", "results/demo"], runner=recorder)
    assert recorder.commands == [["snakemake", "--cores", "all", "results/demo", "--forceall"]]
    recorder = Recorder()
    run_stage("data", [], ["--cores", "all", "results/demo"], runner=recorder)
    assert recorder.commands == [["snakemake", "--cores", "all", "results/demo"]]


def test_a_failing_snakemake_call_names_the_stage_and_stops_the_stage(checkout):
    recorder = Recorder(failing="--touch")
    with pytest.raises(HandboneError, match=r"DVC stage cv: snakemake .*--touch.* failed \(exit 1\)"):
        run_stage("cv", ["cv_model"], ["--cores", "all"], runner=recorder)
    assert len(recorder.commands) == 1


def test_the_command_line_splits_the_stage_options_from_snakemakes(checkout, monkeypatch):
    from handbone import cli

    calls = []
    monkeypatch.setattr("handbone.dvc_stage.run_stage", lambda *args: calls.append(args))
    argv = ["dvc-stage", "--stage", "train@m", "--after", "preprocess", "split", "--", "--cores", "all", "--until", "x"]
    assert cli.main(argv) == 0
    assert calls == [("train@m", ["preprocess", "split"], ["--cores", "all", "--until", "x"])]


# --- Every stage depends on the code its command runs ----------------------
#
# DVC reruns a stage when one of its deps changes, so a stage has to depend
# on every handbone module its command imports. What the command runs:
# - `python -m handbone dvc-stage` itself;
# - the snakemake calls it makes, which import handbone modules while they
#   read the workflow (common.smk);
# - the jobs of the stage: those of its targets and `--until` rules and what
#   they come from, less those of its `--after` rules and what they come from
#   (touched, not run). The jobs, their files and shell commands come from
#   one `snakemake -n -p --forceall` of the whole workflow (config.yaml, as
#   DVC runs it); each job runs `python -m handbone <subcommand>`;
# - the workflow's hooks (train.smk's onstart runs check-models, but only
#   where a job reads or writes a checkpoint: common.smk's models_of_jobs).
# A subcommand runs cli.py (which imports the module of the named
# subcommand alone, by name: cli.COMMANDS) and that module, where its
# arguments and the function it runs are defined; every module imports
# others, at its top or inside functions (all counted), read with the ast
# module (tests/package_imports.py, whose import graph tests/test_imports.py
# searches for circles).

REPO = Path(__file__).resolve().parents[1]
HOOKS = {"workflow.onstart", "workflow.onsuccess", "workflow.onerror"}


class Cli:
    """What ``python -m handbone <subcommand>`` runs: __main__.py, cli.py
    (all it imports, at its top or in its functions) and the subcommand's
    module from ``cli.COMMANDS``."""

    def __init__(self):
        from handbone import cli

        self.parser = cli.build_parser()
        self.module_of = {name: f"{module}.py" for name, (module, _) in cli.COMMANDS.items()}
        self.graph = import_graph()
        self.always = {"__init__.py", "__main__.py", "cli.py"}

    def subcommand(self, argv: list[str]) -> str:
        """The subcommand of ``handbone <argv>``, after the global options."""
        position = 0
        while position < len(argv) and argv[position].startswith("-"):
            action = self.parser._option_string_actions.get(argv[position])
            if action is None:
                pytest.fail(f"handbone {shlex.join(argv)}: {argv[position]} is no global option of cli.py")
            position += 1 if action.nargs == 0 else 2
        if position == len(argv) or argv[position] not in self.module_of:
            pytest.fail(f"handbone {shlex.join(argv)}: no subcommand of cli.py")
        return argv[position]

    def modules(self, subcommand: str) -> set[str]:
        return self.always | {self.module_of[subcommand]}

    def import_closure(self, modules: set[str]) -> set[str]:
        """``modules`` (files) and the handbone modules they import, transitively."""
        seen, todo = set(), list(modules)
        while todo:
            module = todo.pop()
            if module in seen:
                continue
            seen.add(module)
            todo += self.graph[module]
        return seen


def handbone_calls(command: str) -> list[list[str]]:
    """The arguments of each ``python -m handbone`` (or ``handbone``) that a
    shell command line runs. Other Python (a script, ``-c``) or a snakemake
    call of its own would run code this test does not follow: it fails."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    segments = [[]]
    for token in lexer:
        if token in ("&&", "||", ";", "|", "&"):
            segments.append([])
        else:
            segments[-1].append(token)
    calls = []
    for segment in segments:
        while segment and re.fullmatch(r"\w+=.*", segment[0]):  # VARIABLE=value before the program
            segment = segment[1:]
        program = posixpath.basename(segment[0]) if segment else ""
        if program == "handbone":
            calls.append(segment[1:])
        elif re.fullmatch(r"python[0-9.]*", program):
            if segment[1:3] != ["-m", "handbone"]:
                pytest.fail(f"{command!r} runs Python other than `python -m handbone`: not followed by this test")
            calls.append(segment[3:])
        elif program == "snakemake":
            pytest.fail(f"{command!r} runs snakemake itself: not followed by this test")
    return calls


@dataclass
class StageRun:
    """A `handbone dvc-stage` call: which snakemake jobs it runs."""

    targets: list[str]
    until: list[str]
    after: list[str]


def stage_runs(command: str, cli: Cli) -> list[tuple[str, StageRun | None]]:
    """(subcommand, its StageRun where it is dvc-stage) of each handbone call in a DVC stage's command."""
    runs = []
    for argv in handbone_calls(command):
        subcommand = cli.subcommand(argv)
        if subcommand != "dvc-stage":
            runs.append((subcommand, None))
            continue
        args = cli.parser.parse_args(argv)
        arguments = args.snakemake_args[1:] if args.snakemake_args[:1] == ["--"] else args.snakemake_args
        targets, until, position = [], [], 0
        while position < len(arguments):
            if arguments[position] in ("--cores", "-c", "--jobs", "-j"):
                position += 2
            elif arguments[position] == "--until":
                position += 1
                while position < len(arguments) and not arguments[position].startswith("-"):
                    until.append(arguments[position])
                    position += 1
            elif arguments[position].startswith("-"):
                pytest.fail(f"{command!r}: snakemake option {arguments[position]}: teach this test which jobs it runs")
            else:
                targets.append(arguments[position])
                position += 1
        runs.append((subcommand, StageRun(targets, until, args.after)))
    return runs


def dvc_stages() -> dict[str, dict]:
    """dvc.yaml's stages, a ``foreach`` stage expanded over config.yaml's values as DVC does."""
    document = yaml.safe_load((REPO / "dvc.yaml").read_text())
    assert document["vars"] == ["config.yaml"], "this test knows config.yaml as dvc.yaml's only vars"
    variables = yaml.safe_load((REPO / "config.yaml").read_text())

    def fill(text: str, name: str, values: dict) -> str:
        for variable, value in values.items():
            text = text.replace(f"${{{variable}}}", str(value))
        assert "${" not in text, f"stage {name}: {text!r}"
        return text

    stages = {}
    for name, stage in document["stages"].items():
        if "foreach" not in stage:
            stages[name] = stage
            continue
        over = re.fullmatch(r"\$\{(\w+)\}", stage["foreach"])
        assert over, f"stage {name}: foreach {stage['foreach']!r}"
        values = variables[over.group(1)]
        for key, item in values.items() if isinstance(values, dict) else ((value, value) for value in values):
            known = {"key": key, "item": item} if isinstance(values, dict) else {"item": item}
            body = stage["do"]
            stages[f"{name}@{key}"] = {
                "cmd": fill(body["cmd"], name, known),
                "deps": [fill(dep, name, known) for dep in body.get("deps", [])],
            }
    return stages


class Workflow:
    """The Snakefile and the files it includes, as Snakemake compiles them to Python."""

    def __init__(self):
        from snakemake import parser
        from snakemake.sourcecache import LocalSourceFile

        def open_source(source, *args, **kwargs):
            return open(source.get_path_or_uri(secret_free=True), encoding="utf-8")

        sources = type("Workflow", (), {"sourcecache": type("Cache", (), {"open": staticmethod(open_source)})})
        self.files, todo = {}, ["Snakefile"]
        while todo:
            path = todo.pop()
            if path not in self.files:
                code, _ = parser.parse(LocalSourceFile(str(REPO / path)), sources, {})
                self.files[path] = tree = ast.parse(code)
                todo += [
                    node.args[0].value
                    for node in ast.walk(tree)
                    if isinstance(node, ast.Call) and ast.unparse(node.func) == "workflow.include"
                ]
        trees = list(self.files.values())
        # Imported wherever Snakemake reads the workflow (every snakemake call).
        self.reading = handbone_imports(ast.Module(body=trees, type_ignores=[]))
        self.rules = {
            node.name.removeprefix("__rule_"): node
            for tree in trees
            for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef) and node.name.startswith("__rule_")
        }
        # Rules without code (rule all): their compiled function's body is `pass`.
        self.norun = {rule for rule, body in self.rules.items() if all(isinstance(s, ast.Pass) for s in body.body)}
        self.hooks = [
            node
            for tree in trees
            for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef) and {ast.unparse(d) for d in node.decorator_list} & HOOKS
        ]
        (self.checkpoint,) = [
            re.compile(node.value.args[0].value)
            for tree in trees
            for node in tree.body
            if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "CHECKPOINT_PATH"
        ]

    def hook_calls(self, cli: Cli) -> list[tuple[str, bool]]:
        """(subcommand, gated) of each handbone command a hook runs; gated:
        only where a job reads or writes a checkpoint (models_of_jobs)."""
        calls = []
        for hook in self.hooks:
            gated = any(isinstance(node, ast.Name) and node.id == "models_of_jobs" for node in ast.walk(hook))
            for node in ast.walk(hook):
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    calls += [(cli.subcommand(argv), gated) for argv in handbone_calls(node.value)]
        return calls


@dataclass
class Job:
    rule: str
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    shell: str | None = None


def planned(output: str) -> list[Job]:
    """The jobs `snakemake -n -p` prints, with their files and shell commands."""
    jobs = []
    for line in output.splitlines():
        if started := re.fullmatch(r"(?:local)?(?:rule|checkpoint) (\w+):", line):
            jobs.append(Job(started.group(1)))
        elif jobs and (files := re.fullmatch(r"    (input|output): (.*)", line)):
            getattr(jobs[-1], files.group(1) + "s").extend(files.group(2).split(", "))
        elif jobs and line.startswith("Shell command: "):
            jobs[-1].shell = line.removeprefix("Shell command: ")
    return jobs


def writes(job: Job, path: str) -> bool:
    return any(path == out or path.startswith(out + "/") for out in job.outputs)


class Dag:
    def __init__(self, jobs: list[Job], rules: set[str]):
        self.jobs, self.rules = jobs, rules
        self.inputs_of = [
            {other for other, source in enumerate(jobs) for path in job.inputs if writes(source, path)} for job in jobs
        ]

    def matching(self, names: list[str], among: set[int]) -> set[int]:
        """The jobs of these rules (a rule may have none: predict_extra
        without extra images), or that write these files."""
        found = set()
        for name in names:
            matches = {index for index in among if self.jobs[index].rule == name or writes(self.jobs[index], name)}
            if not matches and name not in self.rules:
                pytest.fail(f"no job of the workflow is, or writes, {name!r}")
            found |= matches
        return found

    def upstream(self, jobs: set[int]) -> set[int]:
        seen, todo = set(), list(jobs)
        while todo:
            index = todo.pop()
            if index not in seen:
                seen.add(index)
                todo += self.inputs_of[index]
        return seen

    def run_by(self, targets: list[str], until: list[str]) -> set[int]:
        """The jobs of `snakemake [targets] [--until until] --forceall`."""
        jobs = self.upstream(self.matching(targets or ["all"], set(range(len(self.jobs)))))
        return self.upstream(self.matching(until, jobs)) if until else jobs

    def of_stage(self, run: StageRun) -> list[Job]:
        jobs = self.run_by(run.targets, run.until)
        if run.after:  # `snakemake all --until <after> --touch --no-hooks`: touched, not run
            jobs -= self.run_by([], run.after)
        return [self.jobs[index] for index in sorted(jobs)]


@pytest.fixture(scope="module")
def workflow_jobs(tmp_path_factory) -> list[Job]:
    """Every job of the workflow for config.yaml and of every stage's
    targets, from a forced dry run in a folder that sees the checkout's
    files (a data root or image folder relative to it) but has results/ and
    .snakemake/ of its own: a dry run in the checkout would create
    Snakemake's records there, which `handbone dvc-stage` looks for."""
    workdir = tmp_path_factory.mktemp("dryrun")
    for entry in REPO.iterdir():
        if entry.name not in ("results", ".snakemake"):
            (workdir / entry.name).symlink_to(entry)
    cli = Cli()
    targets = {
        target
        for stage in dvc_stages().values()
        for _, run in stage_runs(stage["cmd"], cli)
        if run
        for target in run.targets
    }
    command, environment = snakemake_command(
        workdir, "-n", "-p", "--forceall", "--nolock", "--cores", "1", "all", *sorted(targets), configfile="config.yaml"
    )
    result = subprocess.run(command, capture_output=True, text=True, env=environment)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return planned(result.stdout)


def stage_modules(command: str, cli: Cli, workflow: Workflow, dag: Dag) -> set[str]:
    """The handbone modules (files) a DVC stage's command runs, with what they import."""
    modules = set()
    for subcommand, run in stage_runs(command, cli):
        modules |= cli.modules(subcommand)
        if run is None:
            continue
        modules |= workflow.reading
        jobs = dag.of_stage(run)
        for job in jobs:
            if job.shell is None:
                assert job.rule in workflow.norun, (
                    f"rule {job.rule} runs code (run:, script:) this test does not follow"
                )
            for argv in handbone_calls(job.shell or ""):
                modules |= cli.modules(cli.subcommand(argv))
        uses_models = any(workflow.checkpoint.search(path) for job in jobs for path in job.inputs + job.outputs)
        for subcommand, gated in workflow.hook_calls(cli):
            if uses_models or not gated:
                modules |= cli.modules(subcommand)
    return cli.import_closure(modules)


def test_every_dvc_stage_depends_on_every_module_its_command_runs(workflow_jobs):
    cli, workflow = Cli(), Workflow()
    dag = Dag(workflow_jobs, set(workflow.rules))
    missing = {}
    for name, stage in dvc_stages().items():
        modules = stage_modules(stage["cmd"], cli, workflow, dag)
        assert {"cli.py", "dvc_stage.py"} <= modules, name
        deps = [posixpath.normpath(dep) for dep in stage.get("deps", [])]
        paths = sorted(f"workflow/handbone/{module}" for module in modules)
        if uncovered := [path for path in paths if not any(path == d or path.startswith(d + "/") for d in deps)]:
            missing[name] = uncovered
    assert not missing, f"DVC stages that do not depend on handbone modules their command runs: {missing}"
