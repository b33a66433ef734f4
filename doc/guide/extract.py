#!/usr/bin/env python3
"""extract.py PAGE.md OUT.c - write the guide page's complete program: the
fenced ```c block right after the line <!-- guide-program -->. The test
suite compiles and runs what this writes, so a page and its program cannot
drift apart. Exits 1 unless the page has exactly one such block."""
import sys

page, out = sys.argv[1], sys.argv[2]
lines = open(page, encoding='utf-8').read().split('\n')
found = []
for i, ln in enumerate(lines):
    if ln.strip() == '<!-- guide-program -->':
        j = i + 1
        while j < len(lines) and not lines[j].strip():
            j += 1
        if j >= len(lines) or lines[j].strip() != '```c':
            sys.exit(f'{page}:{i + 1}: <!-- guide-program --> is not followed by a ```c block')
        k = j + 1
        while k < len(lines) and lines[k].strip() != '```':
            k += 1
        if k >= len(lines):
            sys.exit(f'{page}:{j + 1}: unterminated ```c block')
        found.append((j + 2, lines[j + 1:k]))
if len(found) != 1:
    sys.exit(f'{page}: {len(found)} <!-- guide-program --> blocks, want exactly 1')
first, body = found[0]
with open(out, 'w', encoding='utf-8') as f:
    f.write(f'#line {first} "{page}"\n')
    f.write('\n'.join(body) + '\n')
