"""`logs`: log files from PM2's list, the tail command and its parsing, local streaming (real
tail processes on real files), and bad input."""

from __future__ import annotations

import json
import textwrap
import threading
import time
from pathlib import Path

import pytest

from operations.logs import (
    LineSplitter,
    LogFile,
    TailParser,
    select_files,
    stream_local,
    tail_command,
)
from operations.pm2 import parse_jlist
from playbooks.common import Options
from playbooks.logs import LogsRequest, check_request
from tpe_ops.errors import ConfigError
from tpe_ops.inventory import load_inventory


def proc(name, pm_id, out, err, **env):
    return {"name": name, "pm_id": pm_id,
            "pm2_env": {"pm_out_log_path": out, "pm_err_log_path": err, **env}}


def test_log_paths_from_jlist_keep_no_environment():
    raw = [proc("tpe-backend", 1, "/l/b-out.log", "/l/b-error.log", DB_PASSWORD="s3cret!")]
    (found,) = parse_jlist("PM2 banner\n" + json.dumps(raw))
    assert (found["pm_out_log_path"], found["pm_err_log_path"]) == ("/l/b-out.log",
                                                                    "/l/b-error.log")
    assert "s3cret" not in repr(found)
    assert parse_jlist("not json") == []


def test_select_files_merged_cluster_logs_once_in_app_order():
    processes = parse_jlist(json.dumps([
        proc("tpe-frontend", 2, "/l/f-out.log", "/l/f-error.log"),
        proc("tpe-backend", 1, "/l/b-out.log", "/l/b-error.log"),
        proc("tpe-backend", 3, "/l/b-out.log", "/l/b-error.log"),
    ]))
    files = select_files(processes, ["tpe-backend", "tpe-frontend"], ("out", "err"))
    assert [(f.label, f.path) for f in files] == [
        ("tpe-backend/out", "/l/b-out.log"), ("tpe-backend/err", "/l/b-error.log"),
        ("tpe-frontend/out", "/l/f-out.log"), ("tpe-frontend/err", "/l/f-error.log")]
    assert [f.label for f in select_files(processes, ["tpe-backend"], ("err",))] == [
        "tpe-backend/err"]


def test_select_files_instance_files_get_the_instance_id():
    processes = parse_jlist(json.dumps([
        proc("api", 0, "/l/api-out-0.log", "/l/api-error-0.log"),
        proc("api", 1, "/l/api-out-1.log", "/l/api-error-1.log"),
    ]))
    files = select_files(processes, ["api"], ("out",))
    assert [(f.label, f.path) for f in files] == [
        ("api#0/out", "/l/api-out-0.log"), ("api#1/out", "/l/api-out-1.log")]


def test_tail_command_quotes_paths_and_stops_when_the_session_ends():
    command = tail_command(["/l/a b.log", "/l/c.log"], 100, follow=False)
    assert command == "tail -v -n 100 -- '/l/a b.log' /l/c.log"
    follow = tail_command(["/l/c.log"], 5, follow=True, sudo_user="ubuntu")
    assert follow.startswith("sudo -n -u ubuntu -- sh -c ")
    assert "-F" in follow and "cat >/dev/null" in follow


def test_line_splitter_never_cuts_a_line_or_a_character():
    lines: list[str] = []
    splitter = LineSplitter(lines.append)
    data = "first\r\nsecond é line\nthird".encode()
    for i in range(len(data)):  # one byte at a time: the é is split across feeds
        splitter.feed(data[i:i + 1])
    assert lines == ["first", "second é line"]
    splitter.close()
    assert lines[-1] == "third"


def test_tail_parser_follows_headers_and_drops_separators():
    out, err = LogFile("b", "out", "/l/o.log", "b/out"), LogFile("b", "err", "/l/e.log", "b/err")
    seen: list[tuple[str, str]] = []
    parser = TailParser([out, err], lambda f, text: seen.append((f.label, text)))
    for line in ["==> /l/o.log <==", "one", "two", "", "==> /l/e.log <==", "boom",
                 "", "==> /l/o.log <==", "three"]:
        parser.line(line)
    assert seen == [("b/out", "one"), ("b/out", "two"), ("b/err", "boom"), ("b/out", "three")]
    assert parser.counts == {out: 3, err: 1}


def _files(tmp_path):
    out, err = tmp_path / "app-out.log", tmp_path / "app-error.log"
    out.write_text("".join(f"out {i}\n" for i in range(1, 151)))
    err.write_text("err 1\nerr 2\n")
    return (LogFile("app", "out", str(out), "app/out"),
            LogFile("app", "err", str(err), "app/err"))


def test_local_tail_last_n_lines_of_each_file(tmp_path):
    files = _files(tmp_path)
    seen: list[tuple[str, str]] = []
    parser = TailParser(list(files), lambda f, text: seen.append((f.label, text)))
    lines = LineSplitter(parser.line)
    status = stream_local(tail_command([f.path for f in files], 100, False), lines.feed,
                          lambda data: None, threading.Event())
    lines.close()
    assert status == 0
    outs = [text for label, text in seen if label == "app/out"]
    assert len(outs) == 100 and outs[0] == "out 51" and outs[-1] == "out 150"
    assert [text for label, text in seen if label == "app/err"] == ["err 1", "err 2"]


def test_local_follow_shows_new_lines_and_stops_its_tail(tmp_path):
    files = _files(tmp_path)
    seen: list[str] = []
    parser = TailParser(list(files), lambda f, text: seen.append(text))
    lines = LineSplitter(parser.line)
    stop = threading.Event()
    result: list = []
    command = tail_command([f.path for f in files], 0, True)
    worker = threading.Thread(target=lambda: result.append(
        stream_local(command, lines.feed, lambda data: None, stop)))
    worker.start()
    try:
        time.sleep(1.0)
        with open(files[1].path, "a") as handle:
            handle.write("written later\n")
        deadline = time.monotonic() + 10
        while "written later" not in seen and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        stop.set()
        worker.join(10)
    assert seen == ["written later"]  # --lines 0: nothing from before
    assert not worker.is_alive() and result == [None]
    assert not _processes_reading(files[1].path), "tail outlived the stream"


def _processes_reading(path: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if path in text:
            found.append(text)
    return found


def test_bad_input_unknown_app_negative_lines_json_follow(tmp_path):
    inventory = tmp_path / "inv.py"
    inventory.write_text(textwrap.dedent("""
        app_servers = [("web1", {"ssh_hostname": "127.0.0.1"})]
    """))
    loaded = load_inventory(str(inventory))
    with pytest.raises(ConfigError) as error:
        check_request(loaded, LogsRequest("tpe-backnd"), Options())
    assert "tpe-backnd" in str(error.value)
    assert "tpe-backend, tpe-frontend, all" in str(error.value)
    with pytest.raises(ConfigError, match="--lines -1"):
        check_request(loaded, LogsRequest("all", lines=-1), Options())
    with pytest.raises(ConfigError, match="cannot --follow"):
        check_request(loaded, LogsRequest("all", follow=True), Options(json=True))
    check_request(loaded, LogsRequest("tpe-backend", lines=0), Options())
