#!/usr/bin/env python3
"""Check the links of the documentation: README.md and docs/*.md.

Every relative link must name an existing file or folder, and every
`#anchor` (alone, or after a Markdown file) must name a heading of that
file, with heading ids made as mdBook makes them: the heading's text,
lowercased, whitespace to '-', every character but letters, digits, '-'
and '_' dropped, and a repeated id numbered '-1', '-2', ... Links inside
code (fenced blocks, `spans`) are not links. External links (http:,
https:, mailto:, ...) are not fetched.

Two more rules keep the book whole: every Markdown file in docs/ but
SUMMARY.md is a chapter of SUMMARY.md, and README.md links to every
chapter.

Run from anywhere: `python3 docs/check_links.py`. Prints each broken link
as FILE:LINE: TARGET: REASON and exits 1 if there is any, else prints a
one-line summary and exits 0. Python 3 standard library only.
"""

import os
import re
import sys
from urllib.parse import unquote

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")

FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})")
ATX = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)(?:\s+#+)?\s*$")
# [text](target "title") and ![alt](target); the text may hold one level of
# brackets, e.g. [`[server]`](configuration.md).
INLINE = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*(<[^>]*>|[^)\s]+)(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)")
REFDEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)")
HTML = re.compile(r"<(?:a|img)\b[^>]*?\b(?:href|src)\s*=\s*[\"']([^\"']+)[\"']", re.I)
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def blank_code_spans(line):
    """The line with every inline code span's content turned into spaces."""
    out = []
    i = 0
    while i < len(line):
        if line[i] == "`":
            j = i
            while j < len(line) and line[j] == "`":
                j += 1
            ticks = line[i:j]
            end = line.find(ticks, j)
            # A closing run must be exactly as long as the opening one.
            while end != -1 and end + len(ticks) < len(line) and line[end + len(ticks)] == "`":
                end = line.find(ticks, end + len(ticks) + 1)
            if end == -1:
                out.append(line[i:j])
                i = j
                continue
            out.append(" " * (end + len(ticks) - i))
            i = end + len(ticks)
        else:
            out.append(line[i])
            i += 1
    return "".join(out)


def prose_lines(text):
    """(line number, line) outside fenced code blocks."""
    fence = None
    for n, line in enumerate(text.split("\n"), 1):
        m = FENCE.match(line)
        if fence is None:
            if m:
                fence = m.group(1)
                continue
            yield n, line
        elif m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence) and not line.strip()[len(m.group(1)):].strip():
            fence = None


def heading_text(raw):
    """A heading's text as it renders: code spans, links and emphasis unwrapped."""
    parts = re.split(r"(`+)(.*?)\1", raw)
    text = []
    # re.split with two groups yields: text, ticks, code, text, ticks, code, ...
    for k in range(0, len(parts), 3):
        chunk = parts[k]
        chunk = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", chunk)
        chunk = re.sub(r"<[^>]+>", "", chunk)
        chunk = chunk.replace("*", "")
        chunk = re.sub(r"(?<![A-Za-z0-9])_+|_+(?![A-Za-z0-9])", "", chunk)
        chunk = chunk.replace("\\", "")
        text.append(chunk)
        if k + 2 < len(parts):
            text.append(parts[k + 2])
    return "".join(text)


def normalize_id(text):
    out = []
    for ch in text.strip():
        if ch.isalnum() or ch in "_-":
            out.append(ch.lower() if ch.isascii() else ch)
        elif ch.isspace():
            out.append("-")
    return "".join(out)


_anchor_cache = {}


def anchors(path):
    if path not in _anchor_cache:
        ids = set()
        seen = {}
        with open(path, encoding="utf-8") as f:
            text = f.read()
        for _, line in prose_lines(text):
            m = ATX.match(line)
            if not m:
                continue
            base = normalize_id(heading_text(m.group(2)))
            count = seen.get(base, 0)
            ids.add(base if count == 0 else "%s-%d" % (base, count))
            seen[base] = count + 1
        _anchor_cache[path] = ids
    return _anchor_cache[path]


def links(path):
    """(line number, target) for every link outside code."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    for n, line in prose_lines(text):
        plain = blank_code_spans(line)
        for m in INLINE.finditer(plain):
            yield n, m.group(1).strip("<>")
        m = REFDEF.match(plain)
        if m:
            yield n, m.group(1).strip("<>")
        for m in HTML.finditer(plain):
            yield n, m.group(1)


def check_file(path, problems):
    rel = os.path.relpath(path, ROOT)
    targets = []
    for n, target in links(path):
        targets.append(target)
        if target.startswith("//") or SCHEME.match(target):
            continue
        file_part, _, fragment = target.partition("#")
        file_part = unquote(file_part.split("?", 1)[0])
        dest = path if not file_part else os.path.normpath(os.path.join(os.path.dirname(path), file_part))
        if not os.path.exists(dest):
            problems.append("%s:%d: %s: no such file %s" % (rel, n, target, os.path.relpath(dest, ROOT)))
            continue
        if fragment and dest.endswith(".md") and os.path.isfile(dest):
            if unquote(fragment) not in anchors(dest):
                problems.append("%s:%d: %s: no heading #%s in %s" % (rel, n, target, fragment, os.path.relpath(dest, ROOT)))
    return targets


def chapters():
    """The .md files SUMMARY.md lists, as paths under docs/."""
    summary = os.path.join(DOCS, "SUMMARY.md")
    out = []
    for _, target in links(summary):
        if not SCHEME.match(target):
            out.append(os.path.normpath(os.path.join(DOCS, target.partition("#")[0])))
    return out


def main():
    files = [os.path.join(ROOT, "README.md")]
    files += sorted(os.path.join(DOCS, f) for f in os.listdir(DOCS) if f.endswith(".md"))
    problems = []
    count = 0
    readme_targets = set()
    for path in files:
        targets = check_file(path, problems)
        count += len(targets)
        if path.endswith("README.md") and os.path.dirname(path) == ROOT:
            for t in targets:
                p = t.partition("#")[0]
                if p and not SCHEME.match(p):
                    readme_targets.add(os.path.normpath(os.path.join(ROOT, unquote(p))))

    listed = chapters()
    for path in files:
        if os.path.dirname(path) == DOCS and os.path.basename(path) != "SUMMARY.md" and path not in listed:
            problems.append("%s: not a chapter of docs/SUMMARY.md" % os.path.relpath(path, ROOT))
    for chapter in listed:
        if chapter not in readme_targets:
            problems.append("README.md: does not link the chapter %s" % os.path.relpath(chapter, ROOT))

    for p in problems:
        print(p)
    if problems:
        print("check_links: %d problem(s) in %d files" % (len(problems), len(files)))
        return 1
    print("check_links: %d links in %d files, all resolve; %d chapters, all linked from README.md" % (count, len(files), len(listed)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
