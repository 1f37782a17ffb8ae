"""What train.py, eval.py and sweep.py share: quiet logs, one-line errors, signals, config help."""

import ast
import errno
import importlib.util
import inspect
import io
import logging
import os
import re
import signal
import socket
import sys
import threading
import tokenize
from typing import NoReturn

from absl import flags
from absl import logging as absl_logging

HELP_FLAGS = ("-h", "--help", "-help", "--helpshort", "-?")


def setup_logging() -> None:
    """bertjax's INFO lines only: Orbax's per-checkpoint INFO lines and JAX's backend probing
    (the `libtpu` line) are shown from WARNING up."""
    absl_logging.set_verbosity(absl_logging.WARNING)
    # "12:04:31 WARNING message" rather than absl's "W1125 12:04:31.123456 1397… file.py:320]"
    plain = logging.Formatter("%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    absl_logging.get_absl_handler().setFormatter(plain)
    logging.getLogger("jax").setLevel(logging.WARNING)
    logging.getLogger("bertjax").setLevel(logging.INFO)
    # transformers (tokenizers only) would say "PyTorch was not found. Models won't be
    # available…" at import: true, and nothing a bertjax user needs to act on
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    import datasets  # here: report.py uses this module without needing datasets

    datasets.disable_progress_bars()  # tokenization bars: seconds of Map: 100% lines


def stop_on_signals() -> None:
    """SIGINT (Ctrl-C) or SIGTERM while loading or compiling ends the process at once: one
    `error:` line, exit status 128 + the signal number. Raised as a KeyboardInterrupt it
    printed a traceback, or vanished inside a callback (JAX's GC hook) and the run went on.
    The training loop replaces this with its own handler (stop after the step, save), and
    puts it back after. Call first thing in a CLI's main().

    Python runs a handler only when the main thread next executes Python code; a signal that
    lands just before a blocking read (or in another thread) would leave the process
    waiting for that read. So the signal also wakes a watcher thread (through
    `signal.set_wakeup_fd`), which stops the process itself while this handler is the one
    installed."""

    def stop(signum, frame):
        _stop_now(signum)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, stop)
    _watch_signals(stop)


_stopping = threading.Lock()


def _stop_now(signum: int) -> NoReturn:
    """One line on stderr, then exit 128 + signum with nothing to save. os._exit: an
    exception could be swallowed. The first caller (handler or watcher) ends the process;
    a second waits on the lock until it has."""
    _stopping.acquire()
    if threading.current_thread() is threading.main_thread():
        sys.stdout.flush()  # elsewhere the main thread may hold stdout's lock
    os.write(2, f"error: stopped by {signal.Signals(signum).name}\n".encode())
    os._exit(128 + signum)


def _watch_signals(handler) -> None:
    """A daemon thread reading the signal numbers Python's C-level handler writes to the
    wakeup socket: the ones `handler` is installed for end the process from this thread."""
    receive, send = socket.socketpair()
    send.setblocking(False)
    signal.set_wakeup_fd(send.fileno(), warn_on_full_buffer=False)
    os.register_at_fork(after_in_child=lambda: signal.set_wakeup_fd(-1))  # not the child's

    def watch(send):  # holds `send` open for the C-level handler as long as it runs
        while numbers := receive.recv(64):
            for signum in numbers:
                if signal.getsignal(signum) is handler:
                    _stop_now(signum)

    threading.Thread(target=watch, args=(send,), name="stop-on-signals", daemon=True).start()


_OS_HINTS = {
    errno.ENOENT: "check the path",
    errno.ENOSPC: "free disk space and re-run the same command",
    errno.EFBIG: "free disk space (or raise the file size limit) and re-run the same command",
    errno.EACCES: "choose a folder you can write to",
    errno.EROFS: "choose a folder on a writable file system",
    errno.ENOTDIR: "a file stands where a folder is needed; choose another path",
}


def fail(message: object) -> NoReturn:
    """Exit status 1 after one `error: …` line on stderr. An operating-system error reads
    "<file>: <what the OS said>; <what to do>" rather than Python's "[Errno 20] …"."""
    if isinstance(message, OSError) and message.filename and message.strerror:
        message = f"{message.filename}: {message.strerror}; {_OS_HINTS.get(message.errno, '')}"
        message = message.rstrip("; ")
    text = " ".join(str(message).split("\n")[0].split()) or type(message).__name__
    print(f"error: {text}", file=sys.stderr)
    sys.exit(1)


def _config_path(argv: list[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg in ("--config", "-config") and i + 1 < len(argv):
            return argv[i + 1]
        if re.match(r"^-{1,2}config=", arg):
            return arg.split("=", 1)[1]
    return None


def _load_config(path: str | None):
    """The config a --config path gives (the defaults without one)."""
    if path is None:
        from bertjax.train import defaults

        return defaults.get_config()
    file, sep, arg = path.partition(":")  # big_vision's configs/x.py:arg, as config_flags
    spec = importlib.util.spec_from_file_location("bertjax_cli_config", file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg) if sep else module.get_config()


def unknown_field(config, name: str) -> str | None:
    """None when `name` is a field of config, else e.g. `optim.learning_rate (did you mean
    optim.lr?)`: the closest key at the first level that does not match."""
    from bertjax.train.checks import closest

    node, parts = config, name.split(".")
    for i, part in enumerate(parts):
        keys = list(node.keys()) if hasattr(node, "keys") else []
        if part not in keys:
            initials = "".join(word[:1] for word in part.split("_"))  # learning_rate -> lr
            close = initials if initials in keys else closest(part, keys)
            guess = ".".join([*parts[:i], close, *parts[i + 1 :]]) if close else None
            return name + (f" (did you mean {guess}?)" if guess else "")
        node = node[part]
    return None


def _overrides(argv: list[str]) -> list[str]:
    """Field names of the --config.x.y[=v] / --noconfig.x.y flags in argv."""
    names = []
    for arg in argv:
        match = re.match(r"^-{1,2}(?:no)?config\.([^=]+)", arg)
        if match:
            names.append(match.group(1))
    return names


def _first_line(err: BaseException) -> str:
    text = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def _not_a_config(argv: list[str], err: Exception) -> str | None:
    """The error line for a --config file that is not a config (a run's config.json, a
    markdown file, a script without get_config()), else None."""
    path = _config_path(argv)
    if path is None:
        return None
    what = f"cannot load config file {path}: "
    if path.endswith(".json"):  # ml_collections runs it as Python: NameError on `null`
        return f"{what}a JSON file; pass a configs/*.py file (eval.py --ckpt takes a run folder)"
    if isinstance(err, SyntaxError):
        return f"{what}not Python ({err.msg}, line {err.lineno}); pass a configs/*.py file"
    if isinstance(err, AttributeError) and "get_config" in str(err):
        return f"{what}it has no get_config(); pass a configs/*.py file"
    if not isinstance(err, KeyError | AttributeError | flags.Error):
        return f"{what}{type(err).__name__}: {_first_line(err)}"
    return None


def parse_flags(argv: list[str], command=None) -> list[str]:
    """absl flag parsing with one-line errors (exit 1) and a --help that lists the config
    fields (exit 0); pass as `app.run(main, flags_parser=cli.parse_flags)`. command: the
    module that defines the flags and whose docstring is the help (default: __main__)."""
    if any(arg in HELP_FLAGS for arg in argv[1:]):
        print(help_text(argv, command))
        sys.exit(0)
    try:
        rest = flags.FLAGS(argv)
    except Exception as err:  # noqa: BLE001 - a config file's own code may raise anything
        rest = _flag_error(argv, err)
    if "config" in flags.FLAGS and flags.FLAGS["config"].present:
        try:
            flags.FLAGS.config.get("name")  # a config file that failed to load raises here
        except OSError:
            fail(
                f"cannot load config file {_config_path(argv)}: no such file, or it has no "
                "get_config()"
            )
    return rest


def _flag_error(argv: list[str], err: Exception) -> NoReturn:
    """One line for a failed flag parse (exit 1)."""
    message = _not_a_config(argv, err)
    if message:
        fail(message)
    if isinstance(err, KeyError | AttributeError):  # ml_collections: an override names no field
        try:
            config = _load_config(_config_path(argv))
            wrong = [m for m in map(lambda n: unknown_field(config, n), _overrides(argv)) if m]
        except Exception:  # the config file itself is broken: report the original error
            wrong = []
        fail(f"unknown config field {wrong[0]}" if wrong else _first_line(err))
    if isinstance(err, flags.Error):
        missing = re.search(r"--(\w+) must have a value other than None", str(err))
        if missing:
            fail(f"--{missing.group(1)} is required (python {argv[0]} --help lists the flags)")
        fail(_first_line(err))
    raise err


def field_comments(module) -> dict[str, str]:
    """{"optim.lr": "peak learning rate …"}: the trailing `# comment` of each assignment in
    the module's get_config(), named by its dotted config path."""
    source = inspect.getsource(module)
    comments = {
        token.start[0]: token.string.lstrip("# ").strip()
        for token in tokenize.generate_tokens(io.StringIO(source).readline)
        if token.type == tokenize.COMMENT
    }
    function = next(
        node
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef) and node.name == "get_config"
    )
    aliases: dict[str, str] = {}
    out = {}
    for statement in function.body:
        if not isinstance(statement, ast.Assign):
            continue
        path = None
        for target in statement.targets:
            if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name):
                base = aliases.get(target.value.id)
                path = target.attr if base in (None, "") else f"{base}.{target.attr}"
        for target in statement.targets:
            if isinstance(target, ast.Name):
                aliases[target.id] = path or ""
        lines = range(statement.lineno, statement.end_lineno + 1)
        comment = next((comments[n] for n in lines if n in comments), "")
        if path:
            out[path] = comment
    return out


def config_fields_help(config) -> str:
    """Every field of config: name, its value there and its meaning (bertjax/train/defaults.py)."""
    from bertjax.train import defaults
    from bertjax.train.checks import flat_fields

    meanings = field_comments(defaults)
    fields = flat_fields(config)
    order = {name: i for i, name in enumerate(meanings)}  # defaults' order, then the rest
    fields = dict(sorted(fields.items(), key=lambda item: order.get(item[0], len(order))))
    width = max(map(len, fields))
    values = {name: repr(value) for name, value in fields.items()}
    value_width = min(max(map(len, values.values())), 24)
    return "\n".join(
        f"  {name:<{width}}  {values[name]:<{value_width}}  {meanings.get(name, '')}".rstrip()
        for name in fields
    )


def help_text(argv: list[str], command=None) -> str:
    """The script's docstring, its flags and the config fields with the --config file's
    values (the defaults without one); command: as parse_flags."""
    main = command or sys.modules["__main__"]
    parts = [(main.__doc__ or "").strip(), "", "flags:"]
    own = flags.FLAGS.module_help(main.__name__) if command else flags.FLAGS.main_module_help()
    parts.append(own or "  (none)")
    if "config" in flags.FLAGS:
        path = _config_path(argv)
        try:
            config = _load_config(path)
        except Exception as err:  # help still prints, with the reason
            return "\n".join(parts + ["", f"(cannot load {path}: {_first_line(err)})"])
        parts += [
            "",
            f"config fields (values of {path or 'the defaults'}; override any with "
            "--config.<field>=<value>):",
            config_fields_help(config),
        ]
    return "\n".join(parts)
