#!/usr/bin/env python3
"""xml2man.py XMLDIR OUTDIR VERSION INCLUDEDIR - one man page (section 3)
per public function, and one per public type (the structs such as
gev_handler and gev_options, the enums, the callback and handle typedefs),
written from doxygen's XML output of the public headers in INCLUDEDIR.
A type's SYNOPSIS is its definition as the header has it, with the
plain comments (the doc comments are under MEMBERS).

Each page has NAME (the brief), LIBRARY, SYNOPSIS (the header and the
prototype), DESCRIPTION (the header comment: threads, ownership,
callbacks), ARGUMENTS, RETURN VALUE (every -E code the comment lists),
NOTES (the rules of the whole header: its opening comment, or its @file
block in doc/reference/groups.dox) and
SEE ALSO (the other functions of the header, gev(7)). Writes
OUTDIR/man3/NAME.3 and prints nothing; exits 1 when no function was found.
"""
import os
import re
import sys
import xml.etree.ElementTree as ET


def esc(s):
    """Escape text for roff: backslashes, and dashes as real minus signs."""
    return s.replace('\\', '\\e').replace('-', '\\-')


def inline(el):
    """The text of a doxygen XML element as roff inline markup."""
    out = [esc(el.text or '')]
    for ch in el:
        tag = ch.tag
        if tag in ('parameterlist', 'simplesect', 'programlisting',
                   'itemizedlist', 'orderedlist', 'verbatim'):
            pass  # block-level: handled by blocks()
        elif tag in ('computeroutput', 'bold'):
            out.append('\\fB' + inline(ch) + '\\fP')
        elif tag == 'emphasis':
            out.append('\\fI' + inline(ch) + '\\fP')
        elif tag == 'ref':
            out.append('\\fB' + inline(ch) + '\\fP')
        elif tag == 'linebreak':
            out.append('\n.br\n')
        else:
            out.append(inline(ch))
        out.append(esc(ch.tail or ''))
    return ''.join(out)


def fill(text):
    """Roff lines from inline text: no line may start with . or '."""
    text = re.sub(r'[ \t]*\n[ \t]*', ' ', text).strip()
    text = text.replace(' .br ', '\n.br\n')
    lines = []
    for ln in text.split('\n'):
        if ln and ln[0] in ".'" and ln != '.br':
            ln = '\\&' + ln
        lines.append(ln)
    return '\n'.join(lines)


def blocks(para, sections):
    """Roff paragraphs of one <para>; params and returns go to sections."""
    out = []
    text = fill(inline(para))
    if text:
        out.append('.PP\n' + text)
    for ch in para:
        if ch.tag == 'parameterlist' and ch.get('kind') == 'param':
            for item in ch.findall('parameteritem'):
                names = ', '.join(n.text or '' for n in item.iter('parametername'))
                desc = ' '.join(fill(inline(p)) for p in item.find('parameterdescription').findall('para'))
                sections['params'].append('.TP\n\\fI%s\\fP\n%s' % (esc(names), desc))
        elif ch.tag == 'simplesect':
            body = '\n'.join(b for p in ch.findall('para') for b in blocks(p, sections))
            kind = ch.get('kind')
            if kind == 'return':
                sections['return'].append(body)
            elif kind == 'see':
                sections['see'].append(body)
            else:
                out.append(body)
        elif ch.tag in ('itemizedlist', 'orderedlist'):
            for item in ch.findall('listitem'):
                body = '\n'.join(b for p in item.findall('para') for b in blocks(p, sections))
                out.append('.IP \\(bu 2\n' + body.replace('.PP\n', '', 1))
        elif ch.tag in ('programlisting', 'verbatim'):
            code = []
            for line in ch.iter('codeline'):
                code.append(esc(''.join(line.itertext())))
            if ch.tag == 'verbatim':
                code = [esc(x) for x in (ch.text or '').split('\n')]
            out.append('.PP\n.nf\n.RS 4\n' + '\n'.join(code) + '\n.RE\n.fi')
    return out


def description(el, sections):
    out = []
    if el is None:
        return out
    for p in el.findall('para'):
        out.extend(blocks(p, sections))
    return out


def library(header):
    """The LIBRARY line: the TLS add-on is a library of its own."""
    if header == 'gev/tls.h':
        return ('gev TLS (\\fIlibgev\\-tls\\fP, \\fI\\-lgev\\-tls\\fP; '
                '\\fBpkg\\-config \\-\\-libs gev\\-tls\\fP)')
    return 'gev (\\fIlibgev\\fP, \\fI\\-lgev\\fP; \\fBpkg\\-config \\-\\-libs gev\\fP)'


def head_comment(incdir, header):
    """The header's opening comment (its rules: lifetime, threads, ...) as
    roff paragraphs; indented lines are kept as code. [] when it has only
    its title line."""
    try:
        text = open(os.path.join(incdir, header), encoding='utf-8').read()
    except OSError:
        return []
    m = re.match(r'\s*/\*(.*?)\*/', text, re.S)
    if not m:
        return []
    lines = [re.sub(r'^\s*\* ?', '', ln) for ln in m.group(1).split('\n')]
    while lines and not lines[0].strip():
        lines.pop(0)
    if lines and re.match(r'\S+\.h - ', lines[0]):
        lines[0] = re.sub(r'^\S+\.h - ', '', lines[0])
        lines[0] = lines[0][:1].upper() + lines[0][1:]
    out, para, code = [], [], []
    def flush():
        if para:
            out.append('.PP\n' + fill(esc(' '.join(para))))
            para.clear()
        if code:
            out.append('.PP\n.nf\n.RS 4\n' + '\n'.join('\\&' + esc(c) for c in code) + '\n.RE\n.fi')
            code.clear()
    for ln in lines:
        if not ln.strip():
            flush()
        elif ln.startswith('    '):
            if para:
                flush()
            code.append(ln[4:])
        else:
            if code:
                flush()
            para.append(ln.strip())
    flush()
    return out if len(out) > 1 or len(lines) > 2 else []


def page(fn, header, header_notes, siblings, version):
    name = fn.findtext('name')
    sections = {'params': [], 'return': [], 'see': []}
    brief = ' '.join(fill(inline(p)) for p in fn.find('briefdescription').findall('para')).strip()
    detail = description(fn.find('detaileddescription'), sections)
    ret = ''.join(fn.find('type').itertext()).strip()
    args = fn.findtext('argsstring')
    short = brief.rstrip('.')
    if len(short) > 60:
        cut = min([k for k in (short.find(': '), short.find('; '), short.find(', ')) if k > 10] or [len(short)])
        short = short[:cut]
    proto = '%s%s%s%s;' % (ret, '' if ret.endswith('*') else ' ', name, args)
    roff = ['.\\" Generated by doc/man/xml2man.py from <%s>; do not edit.' % header,
            '.TH %s 3 "" "gev %s" "gev manual"' % (esc(name), version),
            '.SH NAME',
            '%s \\- %s' % (esc(name), short or 'see below'),
            '.SH LIBRARY',
            library(header),
            '.SH SYNOPSIS',
            '.nf',
            '.B #include <%s>' % ('gev/tls.h' if header == 'gev/tls.h' else 'gev/gev.h'),
            '.PP',
            '.BI "' + esc(proto).replace('"', '\\(dq') + '"',
            '.fi',
            '.SH DESCRIPTION']
    roff.append('.PP\nDeclared in \\fB<%s>\\fP.' % esc(header))
    if brief:
        roff.append('.PP\n' + brief)
    roff.extend(detail)
    if sections['params']:
        roff.append('.SH ARGUMENTS')
        roff.extend(sections['params'])
    if sections['return']:
        roff.append('.SH RETURN VALUE')
        roff.extend(sections['return'])
    if header_notes:
        roff.append('.SH NOTES')
        roff.append('.PP\nThe rules of \\fB<%s>\\fP:' % esc(header))
        roff.extend(header_notes)
    roff.append('.SH SEE ALSO')
    see = ['.BR %s (3)' % esc(s) for s in siblings if s != name][:24]
    see.append('.BR gev (7)')
    roff.append(',\n'.join(see))
    return name, '\n'.join(roff) + '\n'


def source_lines(incdir, header, start, end):
    """The header's lines start..end (1-based), extended to the first line
    that ends the declaration (a ';')."""
    with open(os.path.join(incdir, header), encoding='utf-8') as f:
        lines = f.read().split('\n')
    start = max(1, start)
    end = max(end, start)
    while end <= len(lines) and not lines[end - 1].rstrip().endswith(';'):
        end += 1
    return lines[start - 1:end]


def strip_doc_comments(code):
    """The definition without its doc comments (MEMBERS shows them); plain
    comments, which doxygen does not read, stay."""
    text = re.sub(r'/\*\*.*?\*/', '', '\n'.join(code), flags=re.S)
    return [ln.rstrip() for ln in text.split('\n') if ln.strip()]


def type_page(name, header, code, brief, detail, members, siblings, version):
    code = strip_doc_comments(code)
    short = brief.rstrip('.')
    if len(short) > 60:
        cut = min([k for k in (short.find(': '), short.find('; '), short.find(', ')) if k > 10] or [len(short)])
        short = short[:cut]
    roff = ['.\\" Generated by doc/man/xml2man.py from <%s>; do not edit.' % header,
            '.TH %s 3 "" "gev %s" "gev manual"' % (esc(name), version),
            '.SH NAME',
            '%s \\- %s' % (esc(name), short or 'a type of gev'),
            '.SH LIBRARY',
            library(header),
            '.SH SYNOPSIS',
            '.nf',
            '.B #include <%s>' % ('gev/tls.h' if header == 'gev/tls.h' else 'gev/gev.h'),
            '.PP',
            '\n'.join(('\\&' + esc(ln)) if ln else '' for ln in code),
            '.fi',
            '.SH DESCRIPTION',
            '.PP\nDeclared in \\fB<%s>\\fP.' % esc(header)]
    if brief:
        roff.append('.PP\n' + brief)
    roff.extend(detail)
    if members:
        roff.append('.SH MEMBERS')
        roff.extend(members)
    roff.append('.SH SEE ALSO')
    see = ['.BR %s (3)' % esc(x) for x in siblings if x != name][:24]
    see.append('.BR gev (7)')
    roff.append(',\n'.join(see))
    return '\n'.join(roff) + '\n'


def member_items(container):
    """.TP items for the documented members (fields, enumerators)."""
    out = []
    for md in container:
        mname = md.findtext('name')
        sec = {'params': [], 'return': [], 'see': []}
        brief = ' '.join(fill(inline(p)) for p in md.find('briefdescription').findall('para')).strip()
        detail = description(md.find('detaileddescription'), sec)
        if not brief and not detail:
            continue
        body = '\n'.join(([brief] if brief else []) + [d.replace('.PP\n', '', 1) for d in detail])
        out.append('.TP\n\\fB%s\\fP\n%s' % (esc(mname), body))
    return out


def brief_of(el):
    return ' '.join(fill(inline(p)) for p in el.find('briefdescription').findall('para')).strip()


def main():
    xmldir, outdir, version, incdir = sys.argv[1:5]
    index = ET.parse(os.path.join(xmldir, 'index.xml')).getroot()
    man3 = os.path.join(outdir, 'man3')
    if os.path.isdir(man3):  # no page may outlive its function
        for old in os.listdir(man3):
            os.remove(os.path.join(man3, old))
    os.makedirs(man3, exist_ok=True)
    count = 0
    for comp in index.findall('compound'):
        if comp.get('kind') != 'file':
            continue
        root = ET.parse(os.path.join(xmldir, comp.get('refid') + '.xml')).getroot()
        cdef = root.find('compounddef')
        header = cdef.findtext('compoundname')
        loc = cdef.find('location')
        if loc is not None and loc.get('file'):
            header = loc.get('file')
        if not header.endswith('.h'):
            continue
        notes_sections = {'params': [], 'return': [], 'see': []}
        # The header's own opening comment when it says more than a title,
        # else its @file block in doc/reference/groups.dox.
        notes = head_comment(incdir, header) or \
            description(cdef.find('detaileddescription'), notes_sections)
        fns = [md for md in cdef.iter('memberdef') if md.get('kind') == 'function']
        names = [md.findtext('name') for md in fns]
        for md in fns:
            name, text = page(md, header, notes, names, version)
            with open(os.path.join(man3, name + '.3'), 'w') as f:
                f.write(text)
            count += 1
        types = write_types(xmldir, incdir, cdef, header, names, man3, version)
    if count == 0:
        sys.exit('xml2man: no functions in ' + xmldir)


def write_types(xmldir, incdir, cdef, header, fn_names, man3, version):
    """Pages for the header's structs, enums and typedefs."""
    done = set()
    for inner in cdef.findall('innerclass'):
        root = ET.parse(os.path.join(xmldir, inner.get('refid') + '.xml')).getroot()
        sd = root.find('compounddef')
        if sd.get('kind') != 'struct':
            continue
        name = sd.findtext('compoundname')
        loc = sd.find('location')
        code = source_lines(incdir, header, int(loc.get('bodystart', loc.get('line'))),
                            int(loc.get('bodyend', loc.get('line'))))
        sec = {'params': [], 'return': [], 'see': []}
        members = member_items(md for md in sd.iter('memberdef') if md.get('kind') == 'variable')
        text = type_page(name, header, code, brief_of(sd), description(sd.find('detaileddescription'), sec),
                         members, fn_names, version)
        with open(os.path.join(man3, name + '.3'), 'w') as f:
            f.write(text)
        done.add(name)
    for md in cdef.iter('memberdef'):
        kind = md.get('kind')
        name = md.findtext('name')
        if kind not in ('enum', 'typedef') or name in done or name.startswith('@'):
            continue
        loc = md.find('location')
        start = int(loc.get('bodystart') or loc.get('line'))
        end = int(loc.get('bodyend') or start)
        if end < start:
            end = start
        if kind == 'typedef':
            start = end = int(loc.get('line'))
        code = source_lines(incdir, header, start, end)
        sec = {'params': [], 'return': [], 'see': []}
        members = member_items(md.findall('enumvalue')) if kind == 'enum' else []
        text = type_page(name, header, code, brief_of(md), description(md.find('detaileddescription'), sec),
                         members, fn_names, version)
        with open(os.path.join(man3, name + '.3'), 'w') as f:
            f.write(text)
        done.add(name)
    return done


if __name__ == '__main__':
    main()
