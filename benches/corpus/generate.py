#!/usr/bin/env python3
"""Generates sluice's evaluation corpus of long conversations for the pruner.

Every conversation is assembled from real text: the repository's own files at a pinned
revision (REV below, read with `git show`), crate sources and documentation from the
local cargo registry, and command output captured on this machine by capture.sh into
benches/corpus/captured/. Only the glue (system prompts, the user's requests, the
assistant's short remarks) is written here; the assistant's remarks are derived from what
was read (item names, headings, counts, quoted lines).

    python3 benches/corpus/generate.py            # writes benches/corpus/conversations/*.json
    python3 benches/corpus/generate.py --check    # validates the files on disk
    python3 benches/corpus/generate.py --only agent-01-cache-store --out /tmp/c

Deterministic: one fixed seed per conversation, no clock, no environment-dependent
ordering. Needs Python 3.9+ and tiktoken (o200k_base is loaded from the file shipped with
the tiktoken-rs crate, so no network is needed).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import random
import re
import string
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
OUT = HERE / "conversations"
CAPTURED = HERE / "captured"
# Repository revision the repository's files are read from (so that concurrent edits of
# the working tree do not change the corpus).
REV = "b584f37"
SEED = 20261121
MAX_CORPUS_BYTES = 3_000_000
SHORT_MAX_TOKENS = 1500

# ---------------------------------------------------------------------------- tokens

_ENC = None


def encoding():
    """o200k_base, loaded from the copy shipped with the tiktoken-rs crate."""
    global _ENC
    if _ENC is None:
        import tiktoken
        import tiktoken.load
        import tiktoken_ext.openai_public as openai_public

        paths = sorted(
            glob.glob(
                os.path.expanduser(
                    "~/.cargo/registry/src/*/tiktoken-rs-*/assets/o200k_base.tiktoken"
                )
            )
        )
        if not paths:
            sys.exit("generate.py: o200k_base.tiktoken not found in ~/.cargo/registry (tiktoken-rs)")
        local = paths[-1]
        real_loader = openai_public.load_tiktoken_bpe
        # Same pattern and special tokens as tiktoken's own constructor; only the ranks
        # come from the local file (its sha256 is still checked).
        openai_public.load_tiktoken_bpe = lambda _url, expected_hash=None: tiktoken.load.load_tiktoken_bpe(
            local, expected_hash
        )
        try:
            _ENC = tiktoken.Encoding(**openai_public.o200k_base())
        finally:
            openai_public.load_tiktoken_bpe = real_loader
    return _ENC


def ntok(text: str) -> int:
    return len(encoding().encode_ordinary(text)) if text else 0


def content_text(content) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for part in content:
        if isinstance(part, dict):
            parts.append(part.get("text") or "")
    return "".join(parts)


def message_tokens(msg: dict) -> int:
    """Tokens of one chat message or one Responses input item."""
    kind = msg.get("type")
    if kind == "function_call":
        return 3 + ntok(msg.get("name", "")) + ntok(msg.get("arguments", ""))
    if kind == "function_call_output":
        return 3 + ntok("tool") + ntok(content_text(msg.get("output")))
    n = 3 + ntok(msg.get("role", "")) + ntok(content_text(msg.get("content")))
    for call in msg.get("tool_calls") or []:
        fn = call.get("function", {})
        n += 3 + ntok(fn.get("name", "")) + ntok(fn.get("arguments", ""))
    return n


def request_items(request: dict) -> list:
    return request.get("messages") if "messages" in request else request.get("input", [])


def request_tokens(request: dict) -> int:
    n = 3
    if request.get("instructions"):
        n += 3 + ntok("system") + ntok(request["instructions"])
    for item in request_items(request):
        n += message_tokens(item)
    return n


def item_text(item: dict) -> str:
    """All text of a message or item a pruner could keep or drop."""
    parts = [content_text(item.get("content")), content_text(item.get("output"))]
    if item.get("type") == "function_call":
        parts.append(item.get("arguments", ""))
    for call in item.get("tool_calls") or []:
        parts.append(call.get("function", {}).get("arguments", ""))
    return "\n".join(p for p in parts if p)


# --------------------------------------------------------------------------- sources


@dataclass
class Doc:
    path: str  # as the agent or user names it
    text: str
    source: str  # entry of the "sources" list
    lang: str = "text"


LANGS = {
    ".rs": "rust", ".md": "markdown", ".toml": "toml", ".sh": "bash", ".py": "python",
    ".json": "json", ".lock": "toml", ".tmpl": "nginx", ".sse": "text", ".log": "text",
    ".txt": "text", "": "text",
}


def lang_of(path: str) -> str:
    name = os.path.basename(path)
    if name == "run" or name.endswith(".sh"):
        return "bash"
    return LANGS.get(os.path.splitext(name)[1], "text")


class Sources:
    def __init__(self):
        self._repo = {}
        self.repo_files = subprocess.run(
            ["git", "-C", str(ROOT), "ls-tree", "-r", "--name-only", REV],
            check=True, capture_output=True, text=True,
        ).stdout.split()
        registries = sorted(glob.glob(os.path.expanduser("~/.cargo/registry/src/*/")))
        self.registry = next(
            (r for r in registries if os.path.isdir(os.path.join(r, "tokio-1.54.1"))),
            registries[0] if registries else "",
        )
        self.registry_name = os.path.basename(os.path.normpath(self.registry))

    def repo(self, path: str) -> Doc:
        if path not in self._repo:
            text = subprocess.run(
                ["git", "-C", str(ROOT), "show", f"{REV}:{path}"],
                check=True, capture_output=True,
            ).stdout.decode("utf-8", "replace")
            self._repo[path] = text
        return Doc(path, self._repo[path], path, lang_of(path))

    def crate(self, rel: str) -> Doc:
        with open(os.path.join(self.registry, rel), encoding="utf-8", errors="replace") as f:
            text = f.read()
        return Doc(f"~/.cargo/registry/src/{self.registry_name}/{rel}", text, f"cargo:{rel}", lang_of(rel))

    def captured(self, name: str) -> Doc:
        path = CAPTURED / name
        text = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
        return Doc(name, text, f"captured/{name}", lang_of(name))

    def doc(self, ref: str) -> Doc:
        """"cargo:tokio-1.54.1/README.md", "captured:x.log" or a repository path."""
        if ref.startswith("cargo:"):
            return self.crate(ref[6:])
        if ref.startswith("captured:"):
            return self.captured(ref[9:])
        return self.repo(ref)

    def glob_repo(self, pattern: str) -> list:
        rx = re.compile(
            "^" + re.escape(pattern).replace(r"\*\*/", "(?:.*/)?").replace(r"\*", "[^/]*") + "$"
        )
        return [p for p in self.repo_files if rx.match(p)]


SRC: Sources | None = None

# ------------------------------------------------------------ commands (real output)


def git_commits(text: str) -> list:
    blocks, cur = [], []
    for line in text.splitlines(keepends=True):
        if line.startswith("commit ") and cur:
            blocks.append("".join(cur))
            cur = []
        cur.append(line)
    if cur:
        blocks.append("".join(cur))
    return blocks


def curl_blocks(text: str) -> list:
    """(command, output) pairs of captured/sluice-requests.txt."""
    out = []
    for chunk in re.split(r"(?m)^(?=\$ curl )", text):
        if not chunk.startswith("$ curl"):
            continue
        first, _, rest = chunk.partition("\n")
        out.append((first[2:], rest.rstrip("\n") + "\n"))
    return out


def lines_slice(text: str, a: int, b: int) -> str:
    lines = text.splitlines(keepends=True)
    return "".join(lines[a - 1 : b])


def command(spec: str):
    """A run_command call from a short spec: returns (command line, output, source) or None."""
    name, _, arg = spec.partition(":")
    cap = SRC.captured
    if name == "git_log":
        n = int(arg or 10)
        doc = cap("git-log-stat.txt")
        return f"git log --stat -n {n}", "".join(git_commits(doc.text)[:n]), doc.source
    if name == "git_show":
        doc = cap("git-log-stat.txt")
        for block in git_commits(doc.text):
            if block.startswith(f"commit {arg}"):
                return f"git show --stat {arg}", block, doc.source
        return None
    if name == "cargo_tree":
        doc = cap("cargo-tree.txt")
        if arg:
            hits = [l for l in doc.text.splitlines(keepends=True) if arg in l]
            return f"cargo tree | grep -n '{arg}'", "".join(
                f"{i}:{l}" for i, l in enumerate(doc.text.splitlines(keepends=True), 1) if l in hits
            ), doc.source
        return "cargo tree", doc.text, doc.source
    if name == "serve_log":
        doc = cap("sluice-serve.log")
        a, b = (int(x) for x in arg.split("-"))
        return (
            f"sed -n '{a},{b}p' /tmp/corpus/serve.log",
            lines_slice(doc.text, a, b),
            doc.source,
        )
    if name == "grep_log":
        doc = cap("sluice-serve.log")
        hits = [l for l in doc.text.splitlines(keepends=True) if arg in l]
        return f"grep -F '{arg}' /tmp/corpus/serve.log", "".join(hits), doc.source
    if name == "curl":
        doc = cap("sluice-requests.txt")
        blocks = curl_blocks(doc.text)
        i = int(arg)
        if i >= len(blocks):
            return None
        cmd, out = blocks[i]
        return cmd, out, doc.source
    if name == "metrics":
        doc = cap("sluice-metrics.txt")
        return "curl -s http://127.0.0.1:8080/metrics", doc.text, doc.source
    if name == "check_config":
        doc = cap("sluice-check-config.txt")
        return "./target/debug/sluice check-config --config /tmp/corpus/sluice.toml", doc.text, doc.source
    if name == "cargo_test":
        doc = cap("cargo-test.txt")
        if not doc.text:
            return None
        return "cargo test 2>&1", doc.text, doc.source
    if name == "wc":
        files = [p for p in SRC.repo_files if p.startswith(arg or "src/") and p.endswith(".rs")]
        rows, total = [], 0
        for p in files:
            n = SRC.repo(p).text.count("\n")
            rows.append((n, p))
            total += n
        rows.sort()
        out = "".join(f"{n:>6} {p}\n" for n, p in rows) + f"{total:>6} total\n"
        return f"wc -l $(git ls-files '{arg or 'src/'}*.rs') | sort -n", out, f"git ls-tree {REV}"
    if name == "ls":
        d = arg.rstrip("/") + "/"
        names = sorted({p[len(d):].split("/")[0] + ("/" if "/" in p[len(d):] else "") for p in SRC.repo_files if p.startswith(d)})
        return f"ls {arg}", "\n".join(names) + "\n", f"git ls-tree {REV}"
    if name == "cat":
        doc = SRC.doc(arg)
        return f"cat {doc.path}", doc.text, doc.source
    if name == "var_log":
        doc = cap(arg)
        if not doc.text:
            return None
        real = {
            "dpkg.log": "/var/log/dpkg.log", "apt-history.log": "/var/log/apt/history.log",
            "redis-server.log": "/var/log/redis/redis-server.log",
        }.get(arg, arg)
        return f"cat {real}", doc.text, doc.source
    if name == "pip_list":
        doc = cap("pip-list.txt")
        return "pip list -v", doc.text, doc.source
    raise ValueError(f"unknown command spec {spec}")


def search(query: str, under: str = "src/") -> tuple:
    """search_code: grep -n over the repository's text files at REV."""
    hits = []
    for p in SRC.repo_files:
        if not p.startswith(under) or p.endswith(".lock"):
            continue
        for i, line in enumerate(SRC.repo(p).text.splitlines(), 1):
            if query in line:
                hits.append(f"{p}:{i}:{line.rstrip()}")
    shown = hits[:60]
    out = "\n".join(shown)
    if len(hits) > len(shown):
        out += f"\n... {len(hits) - len(shown)} more matches"
    if not hits:
        out = "No matches."
    return out + "\n", len(hits), len({h.split(':', 1)[0] for h in hits})


# ------------------------------------------------------------------ describing text

RUST_ITEM = re.compile(
    r"^\s*(?:pub(?:\([^)]*\))?\s+)?(?:async\s+|unsafe\s+|const\s+(?=fn))*(fn|struct|enum|trait|type|mod|const|static)\s+([A-Za-z_][A-Za-z0-9_]*)",
    re.M,
)


def rust_items(text: str, kinds=("fn", "struct", "enum", "trait", "type")) -> list:
    seen, out = set(), []
    for kind, name in RUST_ITEM.findall(text):
        if kind in kinds and name not in seen and not name.startswith("test") and name not in ("new", "default", "fmt", "from", "drop", "clone", "poll", "call", "poll_ready"):
            seen.add(name)
            out.append((kind, name))
    return out


def headings(text: str) -> list:
    out, fence = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fence = not fence
        elif not fence and re.match(r"^#{1,4} \S", line):
            out.append(line.lstrip("#").strip())
    return out


def clean(names, banned) -> list:
    low = [b.lower() for b in banned]
    return [n for n in names if not any(b in n.lower() for b in low)]


def fmt_list(names) -> str:
    names = [f"`{n}`" for n in names]
    if not names:
        return ""
    if len(names) == 1:
        return names[0]
    return ", ".join(names[:-1]) + " and " + names[-1]


def describe(doc: Doc, text: str, banned, rng) -> str:
    """A short, true remark about a text the assistant has just seen."""
    n_lines = text.count("\n") + (0 if text.endswith("\n") else 1)
    if doc.lang == "rust":
        items = rust_items(text)
        types = clean([n for k, n in items if k in ("struct", "enum", "trait", "type")], banned)
        fns = clean([n for k, n in items if k == "fn"], banned)
        tests = len(re.findall(r"#\[(?:tokio::)?test", text))
        bits = []
        if types:
            bits.append(f"defines {fmt_list(types[:3])}")
        if fns:
            pick = fns[:2] + ([rng.choice(fns[2:])] if len(fns) > 2 else [])
            bits.append(f"the functions that matter here are {fmt_list(pick)}")
        if tests:
            bits.append(f"{tests} test{'s' if tests != 1 else ''}")
        if not bits:
            bits.append("mostly glue")
        return f"{'; '.join(bits)} ({n_lines} lines)"
    if doc.lang == "markdown":
        hs = clean(headings(text), banned)[:4]
        if hs:
            return f"covers {', '.join(repr(h) for h in hs)}"
        return f"{n_lines} lines of prose"
    if doc.lang == "toml":
        secs = clean(sorted(set(re.findall(r"^\[+([^\]]+)\]+", text, re.M)), key=text.find), banned)[:5]
        return f"sections {', '.join('[' + s + ']' for s in secs)}" if secs else f"{n_lines} lines"
    if doc.lang in ("bash", "python"):
        fns = clean(re.findall(r"^(?:def |)([a-z_][a-z0-9_]*)(?:\(\) \{|\()", text, re.M), banned)
        fns = [f for f in fns if f not in ("if", "for", "while")][:4]
        return f"helpers {fmt_list(fns)}" if fns else f"{n_lines} lines of script"
    # logs and command output
    statuses = re.findall(r"status=(\d{3})", text)
    if statuses:
        counts = {}
        for s in statuses:
            counts[s] = counts.get(s, 0) + 1
        parts = ", ".join(f"{c}× {s}" for s, c in sorted(counts.items()))
        return f"{n_lines} lines; statuses {parts}"
    m = re.search(r"(\d+) files? changed(?:, (\d+) insertions?\(\+\))?(?:, (\d+) deletions?\(-\))?", text)
    if m:
        return f"{m.group(1)} files changed, +{m.group(2) or 0}/-{m.group(3) or 0}"
    return f"{n_lines} line{'s' if n_lines != 1 else ''} of output"


# ------------------------------------------------------------------- conversations

TOOLS = [
    {
        "name": "read_file",
        "description": "Read a text file from the workspace. Paths are relative to the repository root unless absolute or starting with ~. Optional 1-based inclusive line range.",
        "parameters": {
            "type": "object",
            "properties": {
                "path": {"type": "string", "description": "File path"},
                "start_line": {"type": "integer", "minimum": 1, "description": "First line to return"},
                "end_line": {"type": "integer", "minimum": 1, "description": "Last line to return"},
            },
            "required": ["path"],
            "additionalProperties": False,
        },
    },
    {
        "name": "run_command",
        "description": "Run a shell command in the repository root and return its combined stdout and stderr.",
        "parameters": {
            "type": "object",
            "properties": {
                "command": {"type": "string", "description": "The command line, run with bash -lc"},
                "timeout_ms": {"type": "integer", "minimum": 1000, "description": "Kill the command after this long"},
            },
            "required": ["command"],
            "additionalProperties": False,
        },
    },
    {
        "name": "search_code",
        "description": "Search the repository for a literal string; returns path:line:text for each match.",
        "parameters": {
            "type": "object",
            "properties": {
                "query": {"type": "string", "description": "Literal text to find"},
                "path": {"type": "string", "description": "Directory to search, default the whole repository"},
            },
            "required": ["query"],
            "additionalProperties": False,
        },
    },
    {
        "name": "write_file",
        "description": "Create or overwrite a file in the workspace with the given content.",
        "parameters": {
            "type": "object",
            "properties": {
                "path": {"type": "string", "description": "File path"},
                "content": {"type": "string", "description": "The complete new content"},
            },
            "required": ["path", "content"],
            "additionalProperties": False,
        },
    },
]


def chat_tools():
    return [{"type": "function", "function": dict(t)} for t in TOOLS]


def responses_tools():
    return [{"type": "function", **t} for t in TOOLS]


AGENT_SYSTEM = """You are a coding agent working in the repository of sluice, a Rust reverse proxy for OpenAI-compatible LLM APIs. The repository is checked out at /work/main and you have these tools: read_file, run_command, search_code and write_file.

Guidelines:
- Read code before you talk about it. Quote file paths and identifiers exactly as they appear.
- Prefer small, focused reads and searches; read several independent files in one step when you can.
- Do not change files unless the user asks you to; when you do, keep edits minimal and explain them.
- Commands run in the repository root with a timeout. Never run commands that need the network.
- When you report, be concise: what you found, where (path and item), and what you propose next.
- If something is unclear, say what you would check rather than guessing."""


def call_id(rng) -> str:
    return "call_" + "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(24))


class Conv:
    """Builds a request, keeping a running token count and the list of sources."""

    def __init__(self, endpoint: str, system: str | None, rng, model=None):
        self.endpoint = endpoint
        self.rng = rng
        self.items: list = []
        self.sources: list = []
        self.system = system
        self.model = model or ("gpt-4o" if endpoint == "chat" else "gpt-4.1")
        self.tokens = 3
        if system:
            if endpoint == "chat":
                self._add({"role": "system", "content": system})
            else:
                self.tokens += 3 + ntok("system") + ntok(system)

    def _add(self, item):
        self.items.append(item)
        self.tokens += message_tokens(item)

    def source(self, *srcs):
        for s in srcs:
            if s and s not in self.sources:
                self.sources.append(s)

    def user(self, text: str):
        self._add({"role": "user", "content": text})

    def assistant(self, text: str):
        self._add({"role": "assistant", "content": text})

    def calls(self, calls: list, preface: str | None = None):
        """calls: [(name, args dict, output str)]."""
        ids = [call_id(self.rng) for _ in calls]
        if self.endpoint == "chat":
            self._add({
                "role": "assistant",
                "content": preface,
                "tool_calls": [
                    {"id": i, "type": "function", "function": {"name": n, "arguments": json.dumps(a, ensure_ascii=False)}}
                    for i, (n, a, _) in zip(ids, calls)
                ],
            })
            for i, (_, _, out) in zip(ids, calls):
                self._add({"role": "tool", "tool_call_id": i, "content": out})
        else:
            if preface:
                self._add({"role": "assistant", "content": preface})
            for i, (n, a, _) in zip(ids, calls):
                self._add({"type": "function_call", "call_id": i, "name": n, "arguments": json.dumps(a, ensure_ascii=False)})
            for i, (_, _, out) in zip(ids, calls):
                self._add({"type": "function_call_output", "call_id": i, "output": out})

    def cost_calls(self, calls, preface=None) -> int:
        n = 0
        if self.endpoint == "chat":
            n += 3 + ntok("assistant") + ntok(preface or "")
            for name, a, out in calls:
                n += 3 + ntok(name) + ntok(json.dumps(a, ensure_ascii=False)) + 3 + ntok("tool") + ntok(out) + 8
        else:
            if preface:
                n += 3 + ntok("assistant") + ntok(preface)
            for name, a, out in calls:
                n += 3 + ntok(name) + ntok(json.dumps(a, ensure_ascii=False)) + 3 + ntok("tool") + ntok(out) + 8
        return n

    def request(self) -> dict:
        if self.endpoint == "chat":
            return {"model": self.model, "messages": self.items, "tools": chat_tools()}
        return {"model": self.model, "instructions": self.system, "input": self.items, "tools": responses_tools()}


# --------------------------------------------------------------------- scenarios


@dataclass
class Turn:
    user: str | None = None  # None: the assistant just carries on
    paste: tuple | None = None  # ("doc", ref[, a, b]) pasted into the user message, fenced
    steps: list = field(default_factory=list)  # each step: list of action specs run in parallel
    say: str | None = None  # the assistant's remark after the turn (before the generated notes)


@dataclass
class Scenario:
    name: str
    kind: str
    endpoint: str
    target: int
    lo: int
    hi: int
    fact: str
    ask: list  # terms the final question names; absent from the last messages
    question: str
    task: str = ""
    first: list = field(default_factory=list)  # Turn list holding the fact (early)
    turns: list = field(default_factory=list)
    pool: list = field(default_factory=list)  # refs the generic filler may read
    cmds: list = field(default_factory=list)  # command specs the filler may run
    searches: list = field(default_factory=list)
    avoid: list = field(default_factory=list)  # strings no later message may contain
    system: str | None = None
    closing: list = field(default_factory=list)  # turns run last, after the filler
    reserve: int = 0  # tokens kept for the closing turns
    # docqa
    docs: list = field(default_factory=list)


GENERIC_FOLLOWUPS = [
    "Keep going.",
    "ok. What else is involved?",
    "Good. Please also look at {path}.",
    "Can you check {path} as well? I suspect it plays a part.",
    "Fine. Next: {path}.",
    "Before you propose anything, read {path} too.",
    "Makes sense. Continue with {path}, then summarise.",
    "Look at {path} next, please.",
]

CLOSINGS = [
    "Next I'd like to confirm this against the tests.",
    "That narrows it down; I'll keep reading unless you want a patch now.",
    "Nothing surprising so far; the behaviour matches the README.",
    "I'll check the callers before proposing a change.",
    "Let me know if you want me to go deeper into any of these.",
    "No change needed there as far as I can tell.",
    "This part looks consistent with the rest of the code.",
]

PREFACES = [
    "Let me read {paths}.",
    "Reading {paths}.",
    "I'll look at {paths} next.",
    "Checking {paths}.",
    None,
    None,
    "Next, {paths}.",
]


def fence(text: str, lang: str) -> str:
    ticks = "````" if "```" in text else "```"
    return f"{ticks}{lang}\n{text.rstrip(chr(10))}\n{ticks}"


class Builder:
    def __init__(self, sc: Scenario):
        self.sc = sc
        self.rng = random.Random(f"{SEED}:{sc.name}")
        system = sc.system or AGENT_SYSTEM
        self.conv = Conv(sc.endpoint, system, self.rng)
        self.q_tokens = 3 + ntok("user") + ntok(sc.question)
        self.read_full: set = set()
        self.used_cmds: set = set()
        self.used_search: set = set()
        self.turn_docs: list = []
        self.in_first = False  # the turns holding the fact: no filtering
        self.in_closing = False  # the closing turns may use the reserve

    # --- budget and filters
    def budget(self) -> int:
        held = 0 if self.in_closing else self.sc.reserve
        return self.sc.target - self.conv.tokens - self.q_tokens - 350 - held

    def allowed(self, text: str) -> bool:
        if self.in_first:
            return True
        if any(a in text for a in self.sc.avoid + [self.sc.fact]):
            return False
        if self.conv.tokens > 0.6 * self.sc.target:
            low = text.lower()
            if any(t.lower() in low for t in self.sc.ask):
                return False
        return True

    def fit(self, text: str, limit: int):
        """A contiguous line range of text within limit tokens that passes the filters:
        (a, b, slice), or None. Whole text when it fits."""
        if ntok(text) <= limit and self.allowed(text):
            lines = text.splitlines(keepends=True)
            return 1, len(lines), text
        lines = text.splitlines(keepends=True)
        if limit < 300 or len(lines) < 8:
            return None
        toks = [ntok(l) for l in lines]
        for _ in range(12):
            start = self.rng.randrange(0, max(1, len(lines) // 2))
            total, end = 0, start
            while end < len(lines) and total + toks[end] <= limit:
                total += toks[end]
                end += 1
            if end - start < 8:
                continue
            piece = "".join(lines[start:end])
            if self.allowed(piece):
                return start + 1, end, piece
        return None

    # --- actions: each returns (tool name, args, output, doc-for-describe) or None
    def act(self, spec: str, limit: int):
        kind, _, arg = spec.partition(":")
        if kind == "read":
            doc = SRC.doc(arg)
            if not doc.text:
                return None
            got = self.fit(doc.text, limit)
            if not got:
                return None
            a, b, piece = got
            total = doc.text.count("\n") + (0 if doc.text.endswith("\n") else 1)
            args = {"path": doc.path}
            if (a, b) != (1, total) and piece != doc.text:
                args.update(start_line=a, end_line=b)
            else:
                self.read_full.add(arg)
            return "read_file", args, piece, doc
        if kind == "search":
            query, _, under = arg.partition("@")
            out, n, files = search(query, under or "src/")
            if not self.allowed(out) or ntok(out) > limit:
                return None
            args = {"query": query}
            if under:
                args["path"] = under
            self.used_search.add(arg)
            return "search_code", args, out, Doc(f"search {query}", out, f"search_code over {under or 'src/'} at {REV}", "search")
        if kind == "cmd":
            got = command(arg)
            if not got:
                return None
            cmdline, out, source = got
            piece = out
            if ntok(out) > limit or not self.allowed(out):
                fitted = self.fit(out, limit)
                if not fitted:
                    return None
                a, b, piece = fitted
                if cmdline.startswith("cat ") and " " not in cmdline[4:]:
                    target = cmdline[4:]
                    cmdline = f"head -n {b} {target}" if a == 1 else f"sed -n '{a},{b}p' {target}"
                elif a == 1:
                    cmdline = f"{cmdline} | head -n {b}"
                else:
                    cmdline = f"{cmdline} | sed -n '{a},{b}p'"
            self.used_cmds.add(arg)
            return "run_command", {"command": cmdline}, piece, Doc(cmdline, piece, source, "text")
        if kind == "write":
            # write:path|old|new — the file as read at REV with one line changed
            path, old, new = arg.split("|")
            doc = SRC.repo(path)
            if old not in doc.text:
                raise ValueError(f"{self.sc.name}: {old!r} not in {path}")
            content = doc.text.replace(old, new, 1)
            if not self.allowed(content) or ntok(content) > limit:
                return None
            out = f"Wrote {len(content.encode())} bytes to {path}"
            return "write_file", {"path": path, "content": content}, out, Doc(path, content, path, "write")
        if kind == "write_new":
            # write_new:path|ref|a|b — a new file holding lines a..b of a real file
            path, ref, a, b = arg.split("|")
            doc = SRC.doc(ref)
            content = lines_slice(doc.text, int(a), int(b))
            if not self.allowed(content) or ntok(content) > limit:
                return None
            out = f"Wrote {len(content.encode())} bytes to {path}"
            return "write_file", {"path": path, "content": content}, out, Doc(path, content, doc.source, "write")
        raise ValueError(spec)

    def run_step(self, specs: list, preface=None) -> bool:
        calls, docs = [], []
        for spec in specs:
            limit = self.budget() // max(1, len(specs) - len(calls))
            got = self.act(spec, limit - 60)
            if got is None:
                continue
            name, args, out, doc = got
            if self.conv.cost_calls(calls + [(name, args, out)]) > self.budget():
                continue
            calls.append((name, args, out))
            docs.append((doc, out))
        if not calls:
            return False
        if preface is None:
            pick = self.rng.choice(PREFACES)
            kinds = {name for name, _, _ in calls}
            if pick and kinds == {"search_code"}:
                pick = self.rng.choice(["Searching for {paths}.", "Let me find where {paths} is used.", None])
            elif pick and kinds == {"run_command"}:
                if len(calls) == 1 and len(calls[0][1]["command"]) <= 80:
                    pick = self.rng.choice(["Running {paths}.", "Let me run {paths}.", None])
                else:
                    pick = self.rng.choice([f"Running {len(calls)} commands." if len(calls) > 1 else "Running it.", None])
            elif pick and kinds == {"write_file"}:
                pick = "Writing {paths}."
            if pick:
                names = [a.get("path") or a.get("query") or a.get("command", "")[:80] for _, a, _ in calls]
                preface = pick.format(paths=fmt_list(names))
        if preface and not self.allowed(preface):
            preface = None
        self.conv.calls(calls, preface)
        for doc, out in docs:
            self.conv.source(doc.source)
            if doc.lang != "write":
                self.turn_docs.append((doc, out))
        return True

    def remark(self, say: str | None):
        banned = self.sc.ask + [self.sc.fact]
        lines = []
        if callable(say):
            say = say(self)
        if say and self.allowed(say):
            lines.append(say)
        notes = []
        for doc, out in self.turn_docs[:5]:
            if doc.lang == "search":
                n = out.count("\n")
                n = n if out != "No matches.\n" else 0
                notes.append(f"- search `{doc.path[7:]}`: {n} matching line{'s' if n != 1 else ''}")
            else:
                notes.append(f"- `{doc.path}`: {describe(doc, out, banned, self.rng)}")
        if notes:
            lines.append(self.rng.choice(["Notes:", "What I found:", "Summary of this round:", "So far:"]))
            lines.extend(notes)
        if notes or not lines:
            lines.append(self.rng.choice(CLOSINGS))
        text = "\n".join(lines)
        if not self.allowed(text):
            text = self.rng.choice(CLOSINGS)
        self.conv.assistant(text)
        self.turn_docs = []

    def paste(self, spec) -> str:
        ref = spec[0]
        doc = SRC.doc(ref)
        text = doc.text if len(spec) == 1 else lines_slice(doc.text, spec[1], spec[2])
        self.conv.source(doc.source)
        return fence(text, "text" if doc.lang in ("text",) else doc.lang)

    def run_turn(self, t: Turn, first=False) -> bool:
        if t.user is not None:
            text = t.user
            if t.paste:
                body = self.paste(t.paste)
                text = text.replace("{paste}", body) if "{paste}" in text else f"{text}\n\n{body}"
            if not first and not self.allowed(text):
                return False
            if not first and self.conv.tokens + message_tokens({"role": "user", "content": text}) > self.sc.target - self.q_tokens - 600:
                return False
            self.conv.user(text)
        for step in t.steps:
            if self.budget() < 400 and not first:
                break
            self.run_step(step if isinstance(step, list) else [step])
        self.remark(t.say)
        return True

    def generic_turn(self, pool_left: list) -> bool:
        if self.budget() < 700:
            return False
        k = self.rng.choice([1, 1, 2, 2, 3])
        specs = []
        while pool_left and len(specs) < k:
            specs.append(pool_left.pop(0))
        if not specs:
            return False
        specs.sort(key=lambda s: not s.startswith("read:"))  # the file the user names comes first
        paths = [s.split(":", 1)[1] for s in specs if s.startswith("read:")]
        if paths:
            user = self.rng.choice(GENERIC_FOLLOWUPS).format(path=SRC.doc(paths[0]).path)
        else:
            user = self.rng.choice([
                "Keep going.", "ok, continue.", "Check the tooling side too, use the shell if it helps.",
                "Anything in the history or the logs that matters here?",
            ])
        if not self.allowed(user):
            user = "Keep going."
        self.conv.user(user)
        steps = [specs[:2], specs[2:]] if len(specs) == 3 else [specs]
        if len(specs) == 2 and self.rng.random() < 0.4:
            steps = [[specs[0]], [specs[1]]]
        for st in steps:
            if st:
                self.run_step(st)
        self.remark(None)
        return True

    def build(self) -> dict:
        sc = self.sc
        self.in_first = True
        for t in sc.first:
            self.run_turn(t, first=True)
        self.in_first = False
        for t in sc.turns:
            if self.budget() < 700:
                break
            self.run_turn(t)
        pool = [f"read:{p}" for p in sc.pool if p not in self.read_full]
        pool += [f"cmd:{c}" for c in sc.cmds if c not in self.used_cmds]
        pool += [f"search:{s}" for s in sc.searches if s not in self.used_search]
        self.rng.shuffle(pool)
        # reads of files already read in full are never repeated by the filler
        pool = [p for p in pool if not (p.startswith("read:") and p[5:] in self.read_full)]
        while self.generic_turn(pool):
            pass
        self.in_closing = True
        for t in sc.closing:
            self.run_turn(t)
        self.conv.user(sc.question)
        return finish(sc, self.conv)


def finish(sc: Scenario, conv: Conv) -> dict:
    req = conv.request()
    items = request_items(req)
    fact_message = None
    if sc.fact:
        holders = [i for i, it in enumerate(items) if sc.fact in item_text(it)]
        if len(holders) != 1:
            raise SystemExit(f"{sc.name}: fact found in items {holders}")
        fact_message = holders[0]
    return {
        "name": sc.name,
        "kind": sc.kind,
        "endpoint": sc.endpoint,
        "request": req,
        "fact": sc.fact or None,
        "fact_message": fact_message,
        "tokens": request_tokens(req),
        "sources": conv.sources,
    }


# ------------------------------------------------------------------------- docqa

DOCQA_SYSTEM = (
    "You are a helpful assistant for Rust and infrastructure engineers. The user pastes "
    "documentation and asks about it; answer from the pasted text, quote it where that "
    "helps, and say so when the text does not cover the question."
)


def md_sections(text: str, level_max=3) -> list:
    """(heading, body) pairs of a markdown text, code fences respected."""
    out, cur_h, cur, fence_on = [], None, [], False
    for line in text.splitlines(keepends=True):
        if line.startswith("```"):
            fence_on = not fence_on
        m = None if fence_on else re.match(r"^(#{1,%d}) (\S.*)$" % level_max, line.rstrip("\n"))
        if m:
            if cur_h is not None or "".join(cur).strip():
                out.append((cur_h, "".join(cur)))
            cur_h, cur = m.group(2).strip(), []
        else:
            cur.append(line)
    out.append((cur_h, "".join(cur)))
    return out


def first_sentences(body: str, n=2) -> str:
    prose, fence_on = [], False
    for line in body.splitlines():
        if line.startswith("```"):
            fence_on = not fence_on
            continue
        if fence_on or not line.strip() or line.lstrip().startswith(("|", "<", "[", "!")):
            if prose and not line.strip():
                break
            continue
        prose.append(line.strip())
    text = " ".join(prose)
    sents = re.split(r"(?<=[.!?])\s+", text)
    return " ".join(sents[:n]).strip()


def bullets(body: str, n=4) -> list:
    return [l.strip() for l in body.splitlines() if re.match(r"^\s*[-*] \S", l)][:n]


def first_code(body: str) -> str | None:
    m = re.search(r"```(\w*)\n(.*?)```", body, re.S)
    if m and len(m.group(2)) < 900:
        return f"```{m.group(1)}\n{m.group(2)}```"
    return None


QA_ASKS = [
    "What does the \"{h}\" part say?",
    "Can you summarise \"{h}\" for me?",
    "In \"{h}\", what's the key point I need to know?",
    "I'm reading the \"{h}\" section — what does it boil down to?",
    "Quick one on \"{h}\": what's in there?",
]

CHANGELOG_ASKS = [
    "What changed in {h}?",
    "Anything in {h} that could affect us?",
    "Summarise the {h} entry, please.",
    "Which fixes went into {h}?",
]


VERSION_HEADING = re.compile(r"^(#{1,4}) \[?v?\d+\.\d+", re.M)


def version_level(text: str):
    m = VERSION_HEADING.search(text)
    return len(m.group(1)) if m else None


class DocQA(Builder):
    def qa_for_toml(self, text: str, banned) -> tuple:
        parts = re.split(r"(?m)^(\[+[^\]\n]+\]+)[ \t]*\n", text)
        secs = [(parts[i].strip("[]"), parts[i + 1]) for i in range(1, len(parts) - 1, 2)]
        self.rng.shuffle(secs)
        for name, body in secs:
            if self.sc.fact in body or any(t.lower() in (name + body).lower() for t in banned):
                continue
            keys = re.findall(r"^#?\s?([a-z_]+) = ", body, re.M)
            comments = [l.lstrip("# ").rstrip() for l in body.splitlines() if l.startswith("# ") and " = " not in l]
            if not keys:
                continue
            q = self.rng.choice([
                "What goes in the [{n}] section?", "What does [{n}] control, and which keys does it have?",
                "Walk me through [{n}].",
            ]).format(n=name)
            a = f"[{name}] has {fmt_list(keys[:8])}."
            if comments:
                a += " The file's own notes: \"" + " ".join(comments[:3]) + "\""
            return q, a
        return "Anything in this file I should change for production?", "Nothing here needs changing beyond `listen` and your upstreams."

    def qa_for(self, text: str, banned, lang: str = "markdown") -> tuple:
        """A question about one section of a pasted text and an answer quoting it."""
        if lang == "toml":
            return self.qa_for_toml(text, banned)
        secs = [(h, b) for h, b in md_sections(text, version_level(text) or 3) if h and b.strip()]
        if version_level(text):
            secs = [(h, b) for h, b in secs if re.match(r"^\[?v?\d+\.\d+", h)][:3] or secs
        self.rng.shuffle(secs)
        for h, body in secs:
            if not self.allowed(h + body) and self.conv.tokens > 0.6 * self.sc.target:
                continue
            if self.sc.fact in body or any(t.lower() in (h + body).lower() for t in banned):
                continue
            h = re.sub(r"\[([^\]]+)\]\([^)]*\)", r"\1", h)
            if re.match(r"^\[?v?\d+\.\d+", h):  # changelog entry
                bl = bullets(body, 5)
                if not bl:
                    continue
                q = self.rng.choice(CHANGELOG_ASKS).format(h=h)
                a = f"The {h} entry lists:\n" + "\n".join(bl)
                if len(bullets(body, 50)) > len(bl):
                    a += f"\n…and {len(bullets(body, 50)) - len(bl)} more items in that entry."
                return q, a
            s = first_sentences(body)
            code = first_code(body)
            if not s and not code:
                continue
            q = self.rng.choice(QA_ASKS).format(h=h)
            a = f"From the \"{h}\" section: {s}" if s else f"The \"{h}\" section is mostly an example:"
            if code and self.rng.random() < 0.6:
                a += f"\n\nThe example it gives:\n{code}"
            return q, a
        return "Anything in this part I should pay attention to?", "Nothing in this part stands out beyond what we already covered."

    def chunks(self, doc: Doc, limit: int) -> list:
        """The text cut at headings into pieces under limit tokens."""
        level = version_level(doc.text) if "CHANGELOG" in doc.path else 2
        level = level or 2
        pieces, cur = [], ""
        for h, body in self._sections_with_marks(doc.text, level):
            part = h + body
            if cur and ntok(cur + part) > limit:
                pieces.append(cur)
                cur = ""
            cur += part
        if cur:
            pieces.append(cur)
        return pieces

    @staticmethod
    def _sections_with_marks(text: str, level: int) -> list:
        """Like md_sections, but the heading line is kept as written."""
        out, head, cur, fence_on = [], "", [], False
        for line in text.splitlines(keepends=True):
            if line.startswith("```"):
                fence_on = not fence_on
            if not fence_on and re.match(r"^#{1,%d} \S" % level, line):
                if head or "".join(cur).strip():
                    out.append((head, "".join(cur)))
                head, cur = line, []
            else:
                cur.append(line)
        out.append((head, "".join(cur)))
        return out

    def build(self) -> dict:
        sc = self.sc
        banned = sc.ask
        # first message: the doc holding the fact, in full, and a question about it
        first = SRC.doc(sc.docs[0][0])
        self.conv.source(first.source)
        intro = sc.docs[0][1]
        q, a = self.qa_for(first.text, banned, first.lang)
        self.conv.user(f"{intro}\n\n{fence(first.text, first.lang)}\n\n{q}")
        self.conv.assistant(a)
        for ref, intro, limit in sc.docs[1:]:
            doc = SRC.doc(ref)
            level = (version_level(doc.text) if "CHANGELOG" in doc.path else 2) or 2
            used = 0
            for piece in self.chunks(doc, limit):
                budget = sc.target - self.conv.tokens - self.q_tokens - 400
                if budget < 800:
                    break
                last = False
                if ntok(piece) > budget - 200:
                    # the leading sections that fit, and this file ends there
                    cut = ""
                    for h, body in self._sections_with_marks(piece, level):
                        if ntok(cut + h + body) > budget - 200:
                            break
                        cut += h + body
                    if not cut.strip():
                        break
                    piece, last = cut, True
                if not self.allowed(piece):
                    if used:
                        break  # pasted parts stay contiguous
                    continue
                q, a = self.qa_for(piece, banned, doc.lang)
                lead = intro if used == 0 else self.rng.choice(
                    ["Next part:", "Continuing:", "More of the same file:", "And this bit:"]
                )
                self.conv.source(doc.source)
                self.conv.user(f"{lead}\n\n{fence(piece, doc.lang)}\n\n{q}")
                self.conv.assistant(a)
                used += 1
                if last:
                    break
        self.conv.user(sc.question)
        d = finish(sc, self.conv)
        d["request"].pop("tools")
        return d


# -------------------------------------------------------------------------- short

def shorts() -> list:
    rd = lambda p: SRC.repo(p).text
    out = []

    def mk(name, endpoint_items, sources, system=None):
        rng = random.Random(f"{SEED}:{name}")
        conv = Conv("chat", system, rng)
        for item in endpoint_items:
            if item[0] == "calls":
                conv.calls(item[1])
            else:
                getattr(conv, item[0])(item[1])
        conv.source(*sources)
        sc = Scenario(name, "short", "chat", 0, 0, SHORT_MAX_TOKENS, "", [], "")
        d = finish(sc, conv)
        d["request"].pop("tools")
        if any("tool_calls" in m for m in d["request"]["messages"]):
            d["request"]["tools"] = chat_tools()
        out.append(d)

    readme = rd("README.md")
    de = rd("src/config/de.rs").splitlines(keepends=True)
    toml = rd("config/sluice.toml")
    log = SRC.captured("sluice-serve.log").text
    line413 = next((l for l in log.splitlines() if "status=413" in l), "")
    mk("short-01-greeting", [("user", "Hi! Can you help me set up a local proxy for the OpenAI API?")], [])
    mk(
        "short-02-system-rephrase",
        [("user", "Rephrase this for a changelog entry, one sentence:\n\n" + first_sentences(readme.split("## What it does to a request", 1)[1], 2))],
        ["README.md"],
        system="You write release notes. Be brief and factual.",
    )
    snippet = "".join(de[: min(len(de), 40)])
    mk(
        "short-03-snippet",
        [("user", "What does this do, and is the unit table complete?\n\n" + fence(snippet, "rust"))],
        ["src/config/de.rs"],
    )
    mk(
        "short-04-curl-followup",
        [
            ("user", "How do I send a test request to sluice with curl?"),
            ("assistant", "With sluice listening on 127.0.0.1:8080:\n\n```sh\ncurl -s http://127.0.0.1:8080/v1/chat/completions -H 'content-type: application/json' \\\n  -d '{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"user\",\"content\":\"Hello\"}]}' -i\n```\n\nThe answer carries `x-sluice-upstream` and `x-request-id` headers."),
            ("user", "And to see whether it came from the cache?"),
        ],
        ["README.md"],
    )
    cargo = rd("Cargo.toml")
    pkg = cargo.split("[dependencies]")[0]
    mk(
        "short-05-tool-call",
        [
            ("user", "Which Rust edition and minimum Rust version does this crate declare?"),
            ("calls", [("read_file", {"path": "Cargo.toml", "end_line": pkg.count("\n"), "start_line": 1}, pkg)]),
        ],
        ["Cargo.toml"],
        system="You are a coding assistant with read access to the repository.",
    )
    mk("short-06-log-line", [("user", "What does this log line mean and how do I fix it on the client side?\n\n" + line413)], ["captured/sluice-serve.log"])
    mk(
        "short-07-system-json",
        [("user", "Extract the [sessions] keys and their defaults from this, as JSON:\n\n" + fence(toml[toml.index("[sessions]"): toml.index("[auth]")], "toml"))],
        ["config/sluice.toml"],
        system="Reply with JSON only, no prose.",
    )
    mk(
        "short-08-redis-urls",
        [
            ("user", "Which Redis URL schemes does sluice accept for the cache?"),
            ("assistant", "`redis://`, `redis+cluster://` (Redis Cluster), and `redis+unix://` or `unix://` for a socket. `rediss://` (TLS) is not supported yet."),
            ("user", "How do I pass a password without putting it in the file?"),
            ("assistant", "Set it through the environment: `SLUICE_CACHE__REDIS_URL=redis://:password@redis:6379/0`. sluice masks URL passwords whenever it prints its config."),
            ("user", "And for a cluster?"),
        ],
        ["config/sluice.toml"],
    )
    gl = git_commits(SRC.captured("git-log-stat.txt").text)
    def subject(block):
        m = re.search(r"^    (\S.*)$", block, re.M)
        return m.group(1) if m else ""
    small = max((b for b in gl[:15] if len(b) < 1800), key=lambda b: (len(subject(b)), b))
    mk("short-09-commit-message", [("user", "Write a shorter commit subject (max 60 chars) for this:\n\n" + fence(small, "text"))], ["captured/git-log-stat.txt"])
    mk(
        "short-10-glob",
        [
            ("user", "Would `models = [\"llama-*\", \"qwen*\"]` match `qwen2.5-coder-32b` and `Llama-3-8B`?"),
            ("assistant", "`qwen*` matches `qwen2.5-coder-32b`. `llama-*` does not match `Llama-3-8B` if matching is case-sensitive — the capital L differs."),
            ("user", "Is it case-sensitive in sluice?"),
        ],
        ["config/sluice.toml"],
    )
    return out


# ------------------------------------------------------------------------- corpus


def commit_line(short: str) -> str:
    """The full "commit <hash>" line of a captured commit."""
    path = CAPTURED / "git-log-stat.txt"
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    for line in text.splitlines():
        if line.startswith(f"commit {short}"):
            return line.strip()
    return f"commit {short}"


def metrics_say(b) -> str:
    text = SRC.captured("sluice-metrics.txt").text
    get = lambda rx: (re.search(rx, text) or [None, "?"])[1]
    hit, miss = get(r'sluice_cache_requests_total\{result="hit"\} (\d+)'), get(r'sluice_cache_requests_total\{result="miss"\} (\d+)')
    up = get(r'sluice_upstream_requests_total\{upstream="mock",status="200"\} (\d+)')
    return (
        f"Yes: {hit} hits against {miss} misses, and only {up} requests reached the mock upstream. "
        "The load repeated a handful of identical prompts, so a high hit ratio is expected; the 400/404/413 answers never reach the cache."
    )


def redis_log_say(b) -> str:
    text = SRC.captured("redis-server.log").text
    ver = (re.search(r"Redis version=([\d.]+)", text) or [None, "?"])[1]
    return (
        f"That log only shows Redis {ver} starting and accepting connections; the one warning is about "
        "vm.overcommit_memory, which matters for background saves, not for our writes. The drops, if any, are on sluice's side."
    )


def grep_count_say(what: str, needle: str):
    def say(b) -> str:
        lines = sum(out.count(needle) for _, out in b.turn_docs)
        return f"{lines} log lines mention {what}."
    return say


def commit_say(b) -> str:
    for doc, out in b.turn_docs:
        m = re.search(r"^    (\S.*)$", out, re.M)
        if m:
            return f"The commit's message: \"{m.group(1)[:220]}\"."
    return "Here is the commit."


def curl_say(b) -> str:
    statuses = [re.search(r"HTTP/1.1 (\d{3})", out) for _, out in b.turn_docs]
    st = [m.group(1) for m in statuses if m]
    return "Statuses in these exchanges: " + ", ".join(st) + ". Every answer carries an x-request-id, and the errors use OpenAI's error shape with a `code`."


def release_notes_say(b) -> str:
    """A draft grouped by area, from the subjects of the commits in the git log."""
    text = SRC.captured("git-log-stat.txt").text
    groups = {}
    for block in git_commits(text)[:15]:
        m = re.search(r"^    (\S.*)$", block, re.M)
        if not m:
            continue
        subject = m.group(1)
        if not b.allowed(subject):
            continue
        low = subject.lower()
        area = ("Documentation" if low.startswith("readme")
                else "Benchmarks and load scripts" if low.startswith(("benchmark", "load script"))
                else "Response cache")
        first = re.split(r"; ", subject)[0]
        groups.setdefault(area, []).append(first[0].upper() + first[1:])
    lines = ["Draft release notes:", ""]
    for area in ("Response cache", "Benchmarks and load scripts", "Documentation"):
        if area in groups:
            lines.append(f"**{area}**")
            lines.extend(f"- {s}" for s in groups[area])
            lines.append("")
    lines.append("Numbers for the cache section can come from benches/RESULTS.md; tell me which figures you want quoted.")
    return "\n".join(lines)


def scenarios() -> list:
    R = lambda *ps: [p for p in ps]
    crate = lambda rel: f"cargo:{rel}"
    S = []

    # 1 ---------------------------------------------------------------- ~20k
    S.append(Scenario(
        name="agent-01-cache-store", kind="agent", endpoint="chat", target=20000, lo=18500, hi=21500,
        fact="const ENTRY_OVERHEAD: u32 = 256;",
        ask=["ENTRY_OVERHEAD"],
        question="Before we wrap up: in src/cache/store.rs, which you read at the start, what is ENTRY_OVERHEAD set to?",
        first=[Turn(
            user="On /metrics, sluice_cache_stored_bytes is clearly higher than the sum of the bodies we cache. Find out how the memory tier charges an entry and whether eviction uses the same number. Don't change code yet.",
            steps=[["read:src/cache/store.rs"]],
            say="The memory tier's weigher charges an entry its body plus its stored stream plus a fixed per-entry overhead, and the stored-bytes gauge is set from moka's weighted_size(), so the gauge and eviction use the same number; it is expected to exceed the sum of the bodies.",
        )],
        turns=[
            Turn(user="Where is the stored-bytes gauge updated?", steps=[["search:CACHE_STORED_BYTES"], ["read:src/observe.rs", "read:src/cache/record.rs"]],
                 say="Only in src/cache/store.rs, from `self.cache.weighted_size()`; src/observe.rs just declares the metric name and its help text, and record.rs never touches it."),
            Turn(user="Here's /metrics from my local run after about 200 requests:\n\n{paste}\n\nDoes the hit/miss split look plausible to you?", paste=("captured:sluice-metrics.txt",), steps=[["read:src/cache/replay.rs"]], say=metrics_say),
            Turn(user="How does moka count size? We give it a weigher, right?", steps=[["cmd:cargo_tree:moka"], ["read:" + crate("moka-0.12.16/README.md")]],
                 say="Right: `MemoryTier::new` passes a weigher to `Cache::builder()`, so `max_capacity` is in weight units (bytes here), not entries. Moka's README covers this under size-aware eviction."),
        ],
        pool=R("src/cache/mod.rs", "src/cache/live.rs", "src/cache/coalesce.rs", "src/cache/directives.rs", "tests/cache.rs"),
        cmds=["git_show:81e5d95", "wc:src/cache/"],
        searches=["memory_max_size", "weigh"],
    ))

    # 2 ---------------------------------------------------------------- ~30k
    S.append(Scenario(
        name="agent-02-redis-writes", kind="agent", endpoint="chat", target=30000, lo=28000, hi=32000,
        fact="const MAX_WRITE_BATCH: usize = 64;",
        ask=["MAX_WRITE_BATCH"],
        question="One more thing for the ticket: what is MAX_WRITE_BATCH in src/cache/redis/mod.rs, i.e. how many queued writes go to Redis together at most?",
        first=[Turn(
            user="Under load, writes to the Redis tier seem to pile up and some entries never show up in Redis. Review the writer loop and the circuit breaker in src/cache/redis/ and tell me where writes can be dropped.",
            steps=[["read:src/cache/redis/mod.rs", "read:src/cache/redis/breaker.rs"]],
            say="Stores are queued for a background writer on the tier's own thread and never waited on; the writer sends them in batches. Writes are dropped in two places, both counted: when the queue is full (dropped_queue_full) and when Redis is unavailable (dropped_breaker_open).",
        )],
        turns=[
            Turn(user="What does the codec do with big values?", steps=[["read:src/cache/redis/codec.rs"], ["search:COMPRESS_OVER"]],
                 say="One header byte, then the payload: 0 for the answer as is, 1 for an LZ4 block with its uncompressed length in front. Answers over COMPRESS_OVER (1024 bytes) are compressed only when that makes them smaller, and a length claiming more than 256× expansion is rejected as corrupt."),
            Turn(user="Here is the redis-server log from the box, in case it matters:\n\n{paste}", paste=("captured:redis-server.log",), steps=[["cmd:cargo_tree:redis"]], say=redis_log_say),
            Turn(user="This is the script I load it with:\n\n{paste}\n\nAnything in it that would explain a write backlog?", paste=("benches/load/redis-hit.sh",), steps=[["read:tests/common/redis.rs"]],
                 say="Not by itself: it loads both instances with the same repeated chat request, so after the first miss everything is a hit and the writer has next to nothing to do; a backlog needs many distinct misses."),
            Turn(user="Show me what the tests cover for the breaker.", steps=[["read:src/cache/redis/tests.rs"]]),
            Turn(user="How does the redis crate's ConnectionManager reconnect?", steps=[["read:" + crate("redis-1.2.2/src/aio/connection_manager.rs")]],
                 say="A failed command whose error means the connection dropped is returned to the caller but triggers a reconnect in the background; commands issued meanwhile await the new connection future, and if reconnecting fails they fail too. So it never queues our writes for us."),
            Turn(user="And the queue size before writes are dropped?", steps=[["search:REDIS_WRITE_QUEUE"], ["cmd:git_show:94550ae"]],
                 say="REDIS_WRITE_QUEUE in src/cache/mod.rs is 10_000 queued writes; it is passed to the tier as `queue`, and past it `put` drops the write and counts it."),
        ],
        pool=R("src/cache/mod.rs", "tests/cache_redis.rs", crate("redis-1.2.2/README.md")),
        cmds=["git_show:abe312a", "wc:src/cache/"],
        searches=["breaker", "redis_timeout"],
    ))

    # 3 ---------------------------------------------------------------- ~40k
    S.append(Scenario(
        name="agent-03-bad-requests", kind="agent", endpoint="chat", target=40000, lo=37000, hi=43000,
        fact="sluice listening addr=127.0.0.1:8080 workers=2 upstreams=1",
        ask=["sluice listening"],
        question="Going back to the very first log I pasted: in the `sluice listening` line near the top, how many workers and upstreams did it report?",
        first=[Turn(
            user="I ran about 200 requests through sluice (debug build) in front of the mock upstream; some of them failed. Here's the start of the log. Classify the failures and point me to the code that produces each one.\n\n{paste}",
            paste=("captured:sluice-serve.log", 1, 60),
            steps=[["search:bad request"], ["read:src/edge/request_id.rs"]],
            say="Three kinds of failures so far, all logged by the request-id layer as \"bad request\": 404 for models no upstream serves, 400 for bodies that are not JSON objects or not JSON at all, and 404 for paths outside /v1/ and the admin routes.",
        )],
        turns=[
            Turn(user="Where is the JSON check?", steps=[["read:src/ingress.rs", "read:src/openai/request.rs"]],
                 say="src/ingress.rs reads the body once, bounded by max_body_size, and parses it: a parse failure becomes \"We could not parse the JSON body of your request: …\" with serde's message, and a body that parses to something other than an object gets \"The request body must be a JSON object.\" Both map to code `invalid_json`."),
            Turn(user="And the error bodies? They look OpenAI-shaped.", steps=[["read:src/error.rs"]],
                 say="Yes: src/error.rs maps every error to a status plus OpenAI's {\"error\": {message, type, param, code}} body; `invalid_json` and `model_not_found` are both `invalid_request_error`."),
            Turn(user="Here are a few of the exchanges with curl -i:", steps=[["cmd:curl:1", "cmd:curl:2", "cmd:curl:3"], ["cmd:curl:9"]], say=curl_say),
            Turn(user="Later in the log there are 413s too:\n\n{paste}", paste=("captured:sluice-serve.log", 150, 200), steps=[["read:src/edge/body_limit.rs"]],
                 say="The 413s are the body limit: 65536 bytes is a max_body_size of 64KiB, lowered from the 32MiB default in your config. A declared Content-Length over the limit is refused before anything is read, and other bodies fail as soon as reading passes it, so nothing goes upstream."),
            Turn(user="Which upstream route produced the model_not_found?", steps=[["read:src/upstream/route.rs"], ["search:model_not_found@tests/"]],
                 say="None: routing picks the first upstream whose `models` globs match the request's model, and when none matches `for_model` returns the error that becomes 404 `model_not_found` before any upstream is called."),
            Turn(user="Do the tests cover these cases?", steps=[["read:tests/errors.rs"]]),
        ],
        pool=R("src/edge/mod.rs", "src/edge/catch_panic.rs", "src/admin.rs", "src/stack.rs", "src/openai/error.rs", "src/openai/endpoint.rs", "src/server.rs", "tests/proxy.rs"),
        cmds=["serve_log:250-330", "grep_log:status=413", "metrics", "check_config"],
        searches=["invalid_json", "max_body_size"],
    ))

    # 4 ---------------------------------------------------------------- ~50k
    S.append(Scenario(
        name="agent-04-upstream-pool", kind="agent", endpoint="chat", target=49500, lo=46500, hi=52500,
        fact="const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);",
        ask=["POOL_IDLE_TIMEOUT"],
        avoid=["from_secs(90)"],
        question="Quick check for the PR description: how long does src/upstream/pool.rs keep an idle pooled connection before closing it? I mean the POOL_IDLE_TIMEOUT constant.",
        first=[Turn(
            user="After quiet periods we sometimes get 'connection closed before message completed' from the upstream. Review how sluice pools upstream connections (src/upstream/) and how hyper-util's legacy pool expires idle ones.",
            steps=[["read:src/upstream/pool.rs"]],
            say="Each upstream gets hyper-util's legacy client over an HttpConnector (TCP_NODELAY, TCP keep-alive, connect_timeout) wrapped in rustls; idle connections are kept per host up to `pool_max_idle` and closed after a fixed idle timeout. prewarm sends HEAD requests to open connections in the background.",
        )],
        turns=[
            Turn(steps=[["read:src/upstream/forward.rs", "read:src/upstream/mod.rs"]]),
            Turn(user="How does hyper-util decide a pooled connection is expired?", steps=[["read:" + crate("hyper-util-0.1.21/src/client/legacy/pool.rs")]],
                 say="An idle connection older than the idle timeout is treated as expired when it is checked out and is dropped instead of reused; with a pool timer set (pool.rs sets `pool_timer`), an IdleTask also sweeps expired ones in the background."),
            Turn(user="Here's the debug log of my run, the pool lines are interesting:\n\n{paste}", paste=("captured:sluice-serve.log", 1, 40), steps=[["cmd:grep_log:reuse idle connection"]],
                 say=grep_count_say("connection reuse", "reuse idle connection")),
            Turn(user="Our deployed config is basically the reference one, top part:\n\n{paste}", paste=("config/sluice.toml", 1, 82), steps=[["cmd:check_config"]]),
            Turn(user="What about the connector?", steps=[["read:" + crate("hyper-util-0.1.21/src/client/legacy/connect/http.rs")]],
                 say="`set_keepalive` sets how long a connection may stay idle before TCP keep-alive probes start (None disables them, the default), and `set_connect_timeout` bounds each connect attempt, divided across the addresses a name resolves to."),
            Turn(user="And where do retries happen?", steps=[["read:src/upstream/route.rs"], ["search:max_retries"]]),
            Turn(user="Check the README's claims about upstream connections.", steps=[["read:README.md"]],
                 say="The README matches the code: one pooled client per upstream and worker, keep-alive, up to `pool_max_idle` idle connections in all, TCP_NODELAY, TCP keep-alive probes, `connect_timeout`, HTTP/2 when a TLS upstream offers it, and `prewarm` connections opened in the background."),
        ],
        pool=R("src/server.rs", "src/stack.rs", "tests/proxy.rs", "tests/lifecycle.rs", "src/body.rs", crate("hyper-util-0.1.21/CHANGELOG.md"), crate("hyper-1.12.0/README.md"), "config/sluice.toml", "src/lifecycle.rs"),
        cmds=["git_show:ba46a4b", "cargo_tree:hyper"],
        searches=["pool_max_idle", "prewarm", "connect_timeout"],
    ))

    # 5 ---------------------------------------------------------------- ~50k
    S.append(Scenario(
        name="agent-05-request-id", kind="agent", endpoint="chat", target=50500, lo=47500, hi=53500,
        fact="const MAX_ID_LEN: usize = 128;",
        ask=["MAX_ID_LEN"],
        question="What's the longest client-sent x-request-id that src/edge/request_id.rs keeps as it is? Give me the exact MAX_ID_LEN value.",
        first=[
            Turn(
                user="I want client-sent x-request-id values with control characters replaced by a fresh id. First understand the current request-id layer and its tests; no edits yet.",
                steps=[["search:x-request-id"], ["read:src/edge/request_id.rs", "read:src/edge/mod.rs"]],
                say="The layer keeps a client's id when it is non-empty and not longer than a fixed limit, otherwise it makes a new one; the id goes into the request's tracing span, so every log line of the request carries it.",
            ),
        ],
        turns=[
            Turn(user="How is the layer stacked with the others?", steps=[["read:src/stack.rs"], ["read:src/edge/timeout.rs"]],
                 say="src/stack.rs assembles the pipeline outermost first: RequestIdLayer comes before CatchPanicLayer, MetricsLayer, AdminLayer and load shedding, so even a panic or an overload answer carries the id."),
            Turn(user="Copy the layer's unit tests into a new tests/request_id.rs as a starting point; we'll extend them there.", steps=[["write_new:tests/request_id.rs|src/edge/request_id.rs|143|204"]],
                 say="Done: tests/request_id.rs holds a copy of the three unit tests. They use private items through `super::*`, so they will need the layer exported (or the tests rewritten against the server) before they compile as an integration test."),
            Turn(user="tower-http has a request-id layer too. Why didn't we use it?", steps=[["read:" + crate("tower-http-0.6.11/src/request_id.rs")]],
                 say="tower-http splits it into SetRequestIdLayer and PropagateRequestIdLayer with a MakeRequestId trait; it would work, but ours also bounds the client's id, opens the tracing span and turns errors into answers carrying the id in one place."),
            Turn(user="Here's a log from my run with a client-provided id:\n\n{paste}", paste=("captured:sluice-serve.log", 200, 240), steps=[["cmd:grep_log:corpus-9"]]),
            Turn(user="Which tests already check the header?", steps=[["read:tests/proxy.rs"]]),
            Turn(user="What else is in src/edge?", steps=[["cmd:ls:src/edge"], ["read:src/edge/load_shed.rs", "read:src/edge/catch_panic.rs"]]),
        ],
        pool=R("src/edge/metrics.rs", "src/edge/body_limit.rs", "src/observe.rs", "src/server.rs", "tests/common/mod.rs", crate("tower-http-0.6.11/CHANGELOG.md"), crate("tracing-subscriber-0.3.23/README.md"), "src/error.rs", "src/admin.rs"),
        cmds=["curl:0", "curl:6", "git_log:5", "serve_log:300-377", "cargo_test"],
        searches=["RequestId", "request_id"],
    ))

    # 6 ---------------------------------------------------------------- ~53k
    S.append(Scenario(
        name="agent-06-coalescing", kind="agent", endpoint="chat", target=53000, lo=50500, hi=55000,
        fact="const MAX_FLIGHT_ROUNDS: usize = 3;",
        ask=["MAX_FLIGHT_ROUNDS"],
        question="For the docs: MAX_FLIGHT_ROUNDS in src/cache/mod.rs — what is its value, i.e. how many flights does a request wait for before going upstream on its own?",
        first=[Turn(
            user="Review the cache's request coalescing: identical requests in flight should share one upstream call, and a failed leader must not strand followers. Start with src/cache/coalesce.rs and src/cache/mod.rs.",
            steps=[["read:src/cache/coalesce.rs", "read:src/cache/mod.rs"]],
            say="Followers wait on the leader's flight; when it ends without storing anything they look again, for a bounded number of rounds, and then go upstream themselves.",
        )],
        turns=[
            Turn(user="And the live streaming followers?", steps=[["read:src/cache/live.rs"], ["read:src/cache/record.rs"]],
                 say="A streamed leader offers a LiveStream: a streamed follower gets the chunks so far, then the rest as they arrive, byte for byte what the leader's client gets; if the leader goes away, live followers end with an error rather than hanging."),
            Turn(user="What did the commit that introduced live followers change?", steps=[["cmd:git_show:29cffdb"]], say=commit_say),
            Turn(user="How does tokio's Notify behave if notify_waiters runs before a waiter registers?", steps=[["read:" + crate("tokio-1.54.1/src/sync/notify.rs")]],
                 say="notify_waiters wakes only the tasks already waiting (a Notified future counts once it is enabled or polled) and stores no permit, unlike notify_one; so a waiter must register before it re-checks the condition, or it can miss the wake-up."),
            Turn(user="Check the tests around coalescing.", steps=[["search:coalesced@tests/"], ["read:tests/cache.rs"]]),
            Turn(user="And the chat stream relaying?", steps=[["read:src/openai/chat_stream.rs"]]),
            Turn(user="This is the Python side of my cache load test:\n\n{paste}\n\nWould it exercise coalescing at all?", paste=("benches/load/cache.py", 1, 142), steps=[["cmd:metrics"]],
                 say="Hardly: `cmd_fill` sends distinct requests (one entry each) from a few keep-alive threads, so two identical requests are almost never in flight together; coalescing needs concurrent identical misses, e.g. oha with one fixed body and high concurrency against a cold cache."),
        ],
        pool=R("src/cache/replay.rs", "src/cache/embeddings.rs", "src/openai/other_streams.rs", "src/openai/sse.rs", crate("tokio-1.54.1/src/sync/broadcast.rs"), "src/body.rs"),
        cmds=["git_show:1a26ed0", "git_show:7684450", "cargo_test"],
        searches=["Flight", "x-sluice-cache"],
    ))

    # 7 ---------------------------------------------------------------- ~65k
    S.append(Scenario(
        name="agent-07-release-notes", kind="agent", endpoint="chat", target=65000, lo=61000, hi=69000,
        fact=commit_line("abe312a"),
        ask=["three-node cluster"],
        avoid=["abe312a"],
        question="In the git log --stat output you pulled at the very start, the commit 'Redis Cluster tested against a real three-node cluster…' — what is its full commit hash?",
        first=[Turn(
            user="I need release notes for the caching work. Go through the recent history and the files those commits touched, then draft notes grouped by area.",
            steps=[["cmd:git_log:15"]],
            say="Fifteen commits, mostly the response cache (Redis tier, coalescing, streams), the cache-key canonicalisation and the load/benchmark scripts.",
        )],
        turns=[
            Turn(user="Start with the Redis tier.", steps=[["read:src/cache/redis/mod.rs"], ["read:src/cache/redis/codec.rs", "read:src/config/validate.rs"]]),
            Turn(user="Then keys.", steps=[["cmd:git_show:2a19624"], ["read:src/cache/key.rs"]]),
            Turn(user="The benchmark results file, please — the notes should quote numbers.", steps=[["read:benches/RESULTS.md"]]),
            Turn(user="And the load scripts README.", steps=[["read:benches/load/README.md"]]),
            Turn(user="Which dependencies were added for the cache?", steps=[["read:Cargo.toml"], ["cmd:cargo_tree:lz4"]],
                 say="For the cache: moka (memory tier), redis (shared tier), lz4_flex (compressing large values in Redis) and blake3 (keys)."),
            Turn(user="Here's what apt installed on the CI box, in case the notes need a redis-server version:\n\n{paste}", paste=("captured:apt-history.log", 1, 60), steps=[]),
        ],
        pool=R("README.md", "src/cache/mod.rs", "src/cache/live.rs", "src/cache/replay.rs", "src/cache/embeddings.rs", "benches/load/cache.sh", "benches/load/common.sh", "benches/cache_key.rs", "tests/cache.rs", "tests/cache_redis.rs", "src/cache/store.rs"),
        cmds=["var_log:dpkg.log", "git_show:b584f37", "git_show:113385a", "git_show:64c2e82", "git_show:616cefb", "git_show:405995c", "git_show:cfb51ef", "git_show:7c9e890", "wc:src/"],
        searches=["cache"],
        closing=[Turn(user="Good, now draft the notes.", say=release_notes_say)],
        reserve=1500,
    ))

    # 8 ---------------------------------------------------------------- ~80k
    S.append(Scenario(
        name="agent-08-config-audit", kind="agent", endpoint="chat", target=80000, lo=76000, hi=84000,
        fact="retry_on: vec![429, 500, 502, 503, 504],",
        ask=["RetryConfig"],
        avoid=["429, 500, 502, 503, 504", "429,500,502,503,504"],
        question="Last question: which HTTP statuses does the Default impl of RetryConfig in src/config/mod.rs retry on? Quote the line from the file you read at the beginning.",
        first=[Turn(
            user="Audit the config layer end to end: the typed sections and their defaults, loading (file, SLUICE_* environment, CLI flags), validation, and how the retry settings reach the forwarder. Report anything inconsistent.",
            steps=[["read:src/config/mod.rs"]],
            say="Each section is a struct with `#[serde(deny_unknown_fields, default)]` and a hand-written Default impl, so the defaults live in one place per section.",
        )],
        turns=[
            Turn(user="Loading next.", steps=[["read:src/config/load.rs", "read:src/config/de.rs"]],
                 say="load.rs layers the built-in defaults, the TOML file (config/sluice.toml by default, or SLUICE_CONFIG) and the environment (prefix `SLUICE_`, `__` between levels) with figment; de.rs parses durations and sizes with their units."),
            Turn(steps=[["read:src/config/validate.rs", "read:src/config/error.rs"]]),
            Turn(user="How does figment's Env provider split nested keys?", steps=[["read:" + crate("figment-0.10.19/src/providers/env.rs")]],
                 say="`Env::prefixed(\"SLUICE_\")` strips the prefix and lower-cases the rest; `.split(\"__\")` turns each `__` into a nesting level, so SLUICE_SERVER__LISTEN becomes `server.listen`."),
            Turn(user="And secrets masking?", steps=[["read:src/config/secret.rs"], ["search:mask_url"]],
                 say="Passwords in URLs are replaced by `****` whenever the config is printed or debug-formatted (`mask_url`), and API keys never appear at all: `api_key_env` only names the variable."),
            Turn(user="The config tests are long, skim them.", steps=[["read:src/config/tests.rs"]]),
            Turn(user="How do CLI flags get merged?", steps=[["read:src/main.rs"], ["cmd:check_config"]]),
            Turn(user="Where is the retry budget enforced?", steps=[["search:budget"], ["read:src/upstream/forward.rs"]]),
            Turn(user="Here is the CI script we run:\n\n{paste}", paste=(".ci/run",), steps=[["read:tests/cli.rs"]]),
        ],
        pool=R("src/upstream/route.rs", "src/upstream/mod.rs", "src/lib.rs", "src/server.rs", "tests/lifecycle.rs", "src/observe.rs",
               crate("figment-0.10.19/README.md"), crate("clap-4.6.7/README.md"), crate("figment-0.10.19/src/figment.rs"),
               crate("figment-0.10.19/src/providers/serialized.rs"), crate("figment-0.10.19/src/metadata.rs"), crate("bytesize-2.7.0/README.md"),
               "tests/common/mod.rs", "src/stack.rs", "benches/load/README.md", "src/edge/load_shed.rs", "tests/proxy.rs", "src/cache/mod.rs"),
        cmds=["git_log:6", "cargo_tree:figment", "cargo_tree:clap", "serve_log:60-150", "metrics", "cargo_test"],
        searches=["humantime", "ConfigError", "SLUICE_", "deny_unknown_fields"],
    ))

    # responses 1 ------------------------------------------------------ ~30k
    S.append(Scenario(
        name="agent-09-mock-embeddings-responses", kind="agent", endpoint="responses", target=30000, lo=27500, hi=32500,
        fact="pub(crate) const MAX_INPUTS: usize = 2048;",
        ask=["MAX_INPUTS"],
        question="If a client sends a huge batch to the mock's /v1/embeddings, where's the cap? What's MAX_INPUTS set to in src/mock/embeddings.rs?",
        system=AGENT_SYSTEM,
        first=[Turn(
            user="A user says the mock upstream's /v1/embeddings rejects their batch. Read the mock's embeddings endpoint and tell me how inputs, dimensions and encoding_format are validated.",
            steps=[["read:src/mock/embeddings.rs"]],
            say="Inputs may be a string, a list of strings, a token list or a list of token lists; the number of inputs and the dimensions are bounded, and each vector is derived deterministically from its input. encoding_format base64 returns the little-endian f32 bytes.",
        )],
        turns=[
            Turn(user="How are requests routed inside the mock?", steps=[["read:src/mock/router.rs", "read:src/mock/mod.rs"]]),
            Turn(user="And where do the numbers come from?", steps=[["read:src/mock/synth.rs"]]),
            Turn(user="Here's what the mock answers through sluice today:", steps=[["cmd:curl:5"]]),
            Turn(user="How does async-openai model the request?", steps=[["read:" + crate("async-openai-0.43.0/src/types/embeddings/embedding.rs")]]),
            Turn(user="Check the endpoint tests.", steps=[["read:src/mock/tests/endpoints.rs"]]),
        ],
        pool=R("src/mock/reply.rs", "src/mock/controls.rs", "src/cache/embeddings.rs", "src/mock/body.rs", "src/mock/chat.rs", "src/mock/responses.rs",
               "src/mock/completions.rs", "src/mock/models.rs", "src/mock/tests/server.rs", crate("async-openai-0.43.0/src/embedding.rs")),
        cmds=["wc:src/mock/", "curl:0", "curl:6"],
        searches=["encoding_format", "dimensions"],
    ))

    # responses 2 ------------------------------------------------------ ~50k
    S.append(Scenario(
        name="agent-10-cache-key-responses", kind="agent", endpoint="responses", target=50000, lo=46500, hi=53500,
        fact='VOLATILE_FIELDS: &[&str] = &["stream", "stream_options", "user"]',
        ask=["VOLATILE_FIELDS"],
        avoid=["`stream`, `stream_options`, `user`"],
        question="Remind me: which request fields does src/cache/key.rs leave out of the cache key through VOLATILE_FIELDS? List them exactly as in the source.",
        system=AGENT_SYSTEM,
        first=[Turn(
            user="Two requests that differ only in `metadata` get different cache entries. Before deciding whether that's right, read how the cache key is computed.",
            steps=[["read:src/cache/key.rs"]],
            say="The key is blake3 over a versioned, canonical form: scope digest, path and query, the body with keys sorted and numbers as written, plus the settings of the rewriting layers below the cache. A short list of top-level fields is left out on purpose; `metadata` is not among them, so it is part of the key by design.",
        )],
        turns=[
            Turn(user="Is there a benchmark for the key?", steps=[["read:benches/cache_key.rs"]]),
            Turn(user="How does the cache module call it?", steps=[["read:src/cache/mod.rs"]]),
            Turn(user="What did the canonicalisation commits say?", steps=[["cmd:git_show:0ce9e44"], ["cmd:git_show:2a19624"]], say=commit_say),
            Turn(user="How is the request body parsed before that?", steps=[["read:src/openai/request.rs"]]),
            Turn(user="And blake3 — any gotchas with incremental hashing?", steps=[["read:" + crate("blake3-1.8.7/README.md")]]),
            Turn(user="Check the cache tests for key behaviour.", steps=[["search:same entry@tests/"], ["read:tests/cache.rs"]]),
        ],
        pool=R("src/cache/directives.rs", "src/cache/store.rs", "src/openai/endpoint.rs", "src/cache/record.rs", crate("serde_json-1.0.154/README.md"), "src/ingress.rs",
               "benches/load/cache.py", "src/cache/live.rs", "src/cache/replay.rs", "src/cache/coalesce.rs", "README.md", "benches/RESULTS.md", "src/openai/sse.rs"),
        cmds=["metrics", "wc:src/cache/", "pip_list"],
        searches=["canonical", "scope"],
    ))

    # docqa ------------------------------------------------------------------
    S.append(Scenario(
        name="docqa-01-tokio", kind="docqa", endpoint="chat", target=28000, lo=24000, hi=32000,
        fact="`1.51.x` - LTS release until March 2027",
        ask=["1.51.x"],
        avoid=["LTS release until"],
        question="Going back to the tokio README from my first message: until when is the 1.51.x line supported as an LTS release?",
        system=DOCQA_SYSTEM,
        docs=[
            ("cargo:tokio-1.54.1/README.md", "We're upgrading tokio in a service. Here's the README of the version we'd move to:", 0),
            ("cargo:tokio-1.54.1/CHANGELOG.md", "And here's the top of its CHANGELOG:", 6500),
            ("cargo:tokio-1.54.1/docs/reactor-refactor.md", "Someone linked this design doc about the reactor, is it relevant?", 5000),
        ],
    ))
    S.append(Scenario(
        name="docqa-02-caches", kind="docqa", endpoint="chat", target=19000, lo=16000, hi=23000,
        fact="`future` | Rust 1.71.1 (August 3, 2023)",
        ask=["MSRV"],
        question="From the Moka README in my first message: what's the MSRV for the `future` feature, and when was that Rust version released?",
        system=DOCQA_SYSTEM,
        docs=[
            ("cargo:moka-0.12.16/README.md", "We're choosing a cache library for an async proxy. Moka's README:", 0),
            ("cargo:redis-1.2.2/README.md", "For the shared tier we'd use redis-rs. Its README:", 5000),
            ("cargo:lz4_flex-0.14.0/README.md", "And lz4_flex for compressing values:", 4000),
            ("cargo:redis-1.2.2/CHANGELOG.md", "redis-rs CHANGELOG, recent part:", 4000),
        ],
    ))
    S.append(Scenario(
        name="docqa-03-http-stack", kind="docqa", endpoint="chat", target=23000, lo=19000, hi=27000,
        fact="optional dependency on zlib-rs which requires 1.75 or later",
        ask=["zlib-rs"],
        question="Earlier I pasted the rustls README. Which Rust version does its optional zlib-rs dependency need?",
        system=DOCQA_SYSTEM,
        docs=[
            ("cargo:rustls-0.23.46/README.md", "Reviewing our HTTP stack. First the rustls README:", 0),
            ("cargo:hyper-1.12.0/README.md", "hyper's README:", 3000),
            ("cargo:reqwest-0.13.5/README.md", "reqwest:", 3000),
            ("cargo:h2-0.4.20/CHANGELOG.md", "h2's changelog:", 4000),
            ("cargo:hyper-util-0.1.21/CHANGELOG.md", "hyper-util's changelog:", 3500),
            ("cargo:tower-http-0.6.11/CHANGELOG.md", "tower-http's changelog:", 4500),
            ("cargo:rustls-platform-verifier-0.7.1/README.md", "We verify certificates with rustls-platform-verifier:", 4000),
            ("cargo:tower-0.5.3/CHANGELOG.md", "Finally tower's changelog:", 4000),
        ],
    ))
    S.append(Scenario(
        name="docqa-04-sluice-docs", kind="docqa", endpoint="chat", target=27000, lo=23000, hi=31000,
        fact='head_ratio = 0.6',
        ask=["head_ratio"],
        question="Back to the config file I pasted first: what's the default head_ratio under [compress], and what does it control?",
        system=DOCQA_SYSTEM,
        docs=[
            ("config/sluice.toml", "I'm deploying sluice next week. This is its reference config:", 0),
            ("README.md", "And the README:", 3000),
            ("benches/load/README.md", "The load-test README:", 3500),
            ("benches/RESULTS.md", "Benchmark results:", 4000),
            ("cargo:metrics-exporter-prometheus-0.18.3/CHANGELOG.md", "We scrape it with Prometheus; the exporter's changelog:", 3500),
            ("cargo:tracing-subscriber-0.3.23/README.md", "Logging goes through tracing-subscriber:", 3000),
            ("cargo:redis-1.2.2/README.md", "We'll run it with a shared Redis; the client's README:", 3500),
        ],
    ))
    return S


def validate_scenarios(S):
    for sc in S:
        for t in sc.ask:
            assert t in sc.question, (sc.name, t)
        assert sc.fact not in sc.question, sc.name


def generate(only=None) -> list:
    S = scenarios()
    validate_scenarios(S)
    out = []
    for sc in S:
        if only and sc.name not in only:
            continue
        b = DocQA(sc) if sc.kind == "docqa" else Builder(sc)
        out.append(b.build())
    for d in shorts():
        if not only or d["name"] in only:
            out.append(d)
    return out


def dump(d: dict) -> str:
    return json.dumps(d, ensure_ascii=False, indent=1) + "\n"


# -------------------------------------------------------------------------- check


def check_file(path: Path, specs: dict) -> list:
    errs = []
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except Exception as e:  # noqa: BLE001
        return [f"{path.name}: invalid JSON: {e}"]
    name = d.get("name")
    E = lambda m: errs.append(f"{path.name}: {m}")
    for k in ("name", "kind", "endpoint", "request", "fact", "fact_message", "tokens", "sources"):
        if k not in d:
            E(f"missing field {k}")
    if errs:
        return errs
    if name != path.stem:
        E("name is not the file stem")
    req = d["request"]
    ep = d["endpoint"]
    if ep == "chat":
        items = req.get("messages")
        if not isinstance(items, list) or not items:
            return errs + [f"{path.name}: chat request without messages"]
        pending = {}
        answered = set()
        for i, m in enumerate(items):
            role = m.get("role")
            if role not in ("system", "user", "assistant", "tool", "developer"):
                E(f"message {i}: bad role {role}")
            if role != "tool" and pending:
                E(f"message {i}: calls {sorted(pending)} not answered before it")
                pending.clear()
            if role == "assistant":
                for c in m.get("tool_calls") or []:
                    if c.get("type") != "function" or not c.get("id", "").startswith("call_"):
                        E(f"message {i}: malformed tool call")
                    try:
                        json.loads(c["function"]["arguments"])
                    except Exception:  # noqa: BLE001
                        E(f"message {i}: arguments are not JSON")
                    if c["id"] in pending or c["id"] in answered:
                        E(f"message {i}: duplicate call id {c['id']}")
                    pending[c["id"]] = i
            if role == "tool":
                cid = m.get("tool_call_id")
                if cid not in pending:
                    E(f"message {i}: tool result {cid} answers no earlier call")
                else:
                    del pending[cid]
                    answered.add(cid)
        if pending:
            E(f"unanswered tool calls {sorted(pending)}")
        if any(m.get("tool_calls") for m in items) and not req.get("tools"):
            E("tool calls without tools")
    elif ep == "responses":
        items = req.get("input")
        if not isinstance(items, list) or not items:
            return errs + [f"{path.name}: responses request without input"]
        calls, outs = {}, {}
        for i, it in enumerate(items):
            t = it.get("type")
            if t == "function_call":
                if it["call_id"] in calls:
                    E(f"item {i}: duplicate call_id")
                calls[it["call_id"]] = i
                try:
                    json.loads(it["arguments"])
                except Exception:  # noqa: BLE001
                    E(f"item {i}: arguments are not JSON")
            elif t == "function_call_output":
                if it["call_id"] not in calls:
                    E(f"item {i}: output {it['call_id']} answers no earlier function_call")
                if it["call_id"] in outs:
                    E(f"item {i}: second output for {it['call_id']}")
                outs[it["call_id"]] = i
            elif it.get("role") not in ("user", "assistant", "system", "developer"):
                E(f"item {i}: unknown item")
        for cid in calls:
            if cid not in outs:
                E(f"function_call {cid} has no output")
    else:
        return errs + [f"{path.name}: bad endpoint {ep}"]

    tokens = request_tokens(req)
    if tokens != d["tokens"]:
        E(f"tokens field {d['tokens']} != recount {tokens}")
    kind = d["kind"]
    n = len(items)
    if kind == "short":
        if tokens >= SHORT_MAX_TOKENS:
            E(f"short conversation has {tokens} tokens")
        if not 1 <= n <= 6:
            E(f"short conversation has {n} messages")
        if d["fact"] is not None or d["fact_message"] is not None:
            E("short conversation with a fact")
        return errs
    if kind not in ("agent", "docqa"):
        return errs + [f"{path.name}: bad kind {kind}"]
    if not d["sources"]:
        E("no sources")
    sc = specs.get(name)
    if sc is None:
        return errs + [f"{path.name}: no scenario named {name} in generate.py"]
    if not sc.lo <= tokens <= sc.hi:
        E(f"{tokens} tokens outside [{sc.lo}, {sc.hi}]")
    if kind == "docqa" and not 15000 <= tokens <= 40000:
        E(f"docqa of {tokens} tokens")
    fact = d["fact"]
    if not isinstance(fact, str) or len(fact) < 12:
        return errs + [f"{path.name}: fact missing or shorter than 12 characters"]
    texts = [item_text(it) for it in items]
    whole = (req.get("instructions") or "") + "\n".join(texts)
    if whole.count(fact) != 1:
        E(f"fact occurs {whole.count(fact)} times")
    fm = d["fact_message"]
    if not isinstance(fm, int) or not 0 <= fm < n or fact not in texts[fm]:
        E("fact is not in fact_message")
    elif fm >= 0.25 * n:
        E(f"fact_message {fm} is not within the first 25% of {n} messages")
    last = items[-1]
    if last.get("role") != "user" or last.get("type"):
        E("does not end with a user message")
    q = content_text(last.get("content"))
    if fact in q:
        E("question contains the fact")
    for term in sc.ask:
        if term not in q:
            E(f"question does not name {term!r}")
        for j in range(max(0, n - 6), n - 1):
            if term.lower() in texts[j].lower():
                E(f"{term!r} appears in message {j}, one of the last 5 before the question")
    return errs


def check(out_dir: Path) -> int:
    specs = {sc.name: sc for sc in scenarios()}
    files = sorted(out_dir.glob("*.json"))
    errs = []
    kinds = {}
    agent_tokens = []
    for f in files:
        errs += check_file(f, specs)
        try:
            d = json.loads(f.read_text(encoding="utf-8"))
            kinds[(d["kind"], d["endpoint"])] = kinds.get((d["kind"], d["endpoint"]), 0) + 1
            if d["kind"] == "agent" and d["endpoint"] == "chat":
                agent_tokens.append(d["tokens"])
        except Exception:  # noqa: BLE001
            pass
    want = {("agent", "chat"): 8, ("agent", "responses"): 2, ("docqa", "chat"): 4, ("short", "chat"): 10}
    if kinds != want:
        errs.append(f"composition {kinds} != {want}")
    if sum(45000 <= t <= 55000 for t in agent_tokens) < 3:
        errs.append("fewer than 3 agent chats between 45k and 55k tokens")
    size = sum(f.stat().st_size for f in files)
    if size >= MAX_CORPUS_BYTES:
        errs.append(f"corpus is {size} bytes (limit {MAX_CORPUS_BYTES})")
    for e in errs:
        print("error:", e)
    print(f"{len(files)} files, {size} bytes, {len(errs)} errors")
    return 1 if errs else 0


def table(docs) -> str:
    rows = ["| name | kind | endpoint | tokens | messages | fact_message | fact |", "|---|---|---|---:|---:|---:|---|"]
    for d in docs:
        items = request_items(d["request"])
        f = (d["fact"] or "").replace("|", "\\|")
        fact = "—" if d["fact"] is None else (f"`` {f} ``" if "`" in f else f"`{f}`")
        fm = "—" if d["fact_message"] is None else str(d["fact_message"])
        rows.append(f"| {d['name']} | {d['kind']} | {d['endpoint']} | {d['tokens']} | {len(items)} | {fm} | {fact} |")
    return "\n".join(rows)


def main():
    global SRC
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="validate the files in conversations/")
    ap.add_argument("--only", nargs="*", help="generate only these conversations")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    out_dir = Path(args.out)
    if args.check:
        sys.exit(check(out_dir))
    SRC = Sources()
    docs = generate(args.only)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not args.only:
        for old in out_dir.glob("*.json"):
            old.unlink()
    for d in docs:
        (out_dir / f"{d['name']}.json").write_text(dump(d), encoding="utf-8")
    print(table(docs))


if __name__ == "__main__":
    main()
