"""Replaces one marked section of bench/results.md, so that bench/run.sh and bench/micro.sh
each own their part of the file: `python3 bench/section.py NAME < text`."""
import pathlib
import re
import sys

name = sys.argv[1]
path = pathlib.Path(sys.argv[2] if len(sys.argv) > 2 else "bench/results.md")
begin, end = f"<!-- {name} -->", f"<!-- /{name} -->"
block = f"{begin}\n{sys.stdin.read().strip()}\n{end}"
text = path.read_text() if path.exists() else "# Benchmark results\n"
pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
path.write_text(text)
