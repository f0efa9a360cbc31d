#!/usr/bin/env python3
"""Fail if an exported item of a C header has no doc comment right before it.

    scripts/header-docs.py [HEADER]     (default include/rktls.h)
    scripts/header-docs.py --self-test  (checks this checker on a sample header)

Items: every #define (except the include guard), enum, enum constant,
struct definition, typedef (except the `typedef enum X X;` / `typedef
uint32_t X;` cbindgen adds after each enum X) and function prototype. A doc
comment is a non-empty /* ... */ or // comment that ends on the line just
above the item (no blank line between). Prints "HEADER:LINE: KIND NAME" per
offender and "N undocumented item(s)"; exits 1 if there is any.
"""
import re
import sys

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


def strip_trailing_comment(line):
    """The code part of a line ('#endif // x' -> '#endif')."""
    return re.sub(r"\s*(//.*|/\*.*\*/)\s*$", "", line)


def scan(text):
    """Return [(line_no, kind, name, documented)] for the items of `text`."""
    lines = text.split("\n")
    items = []
    doc_ends = {}  # line index -> the comment ending there has text
    in_block, block_text = False, ""
    for i, line in enumerate(lines):
        s = line.strip()
        if in_block:
            block_text += " " + s
            if "*/" in s:
                in_block = False
                doc_ends[i] = bool(re.sub(r"[/*\s]", "", block_text))
            continue
        if s.startswith("/*"):
            block_text = s
            if "*/" in s[2:]:
                doc_ends[i] = bool(re.sub(r"[/*\s]", "", s))
            else:
                in_block = True
            continue
        if s.startswith("//"):
            doc_ends[i] = bool(s[2:].strip())

    def documented(i):
        return doc_ends.get(i - 1, False)

    guards = set()
    enums = set()
    in_enum = None  # name of the enum whose body we are in
    in_block = False
    pending_stmt = False  # inside a multi-line declaration
    for i, raw in enumerate(lines):
        s = raw.strip()
        # Skip comment lines themselves.
        if in_block:
            if "*/" in s:
                in_block = False
            continue
        if s.startswith("/*"):
            in_block = "*/" not in s[2:]
            continue
        if not s or s.startswith("//"):
            continue
        code = strip_trailing_comment(s)
        if code.startswith("#"):
            m = re.match(r"#\s*ifndef\s+(%s)\s*$" % IDENT, code)
            if m:
                guards.add(m.group(1))
            m = re.match(r"#\s*define\s+(%s)" % IDENT, code)
            if m:
                name = m.group(1)
                # An include guard: #ifndef X just above #define X.
                prev = next((strip_trailing_comment(l.strip()) for l in reversed(lines[:i]) if l.strip()), "")
                if not (name in guards and re.match(r"#\s*ifndef\s+%s\s*$" % re.escape(name), prev)):
                    items.append((i + 1, "macro", name, documented(i)))
            continue
        if in_enum is not None:
            if code.startswith("}"):
                in_enum = None
                continue
            m = re.match(r"(%s)\s*(=[^,]*)?,?$" % IDENT, code)
            if m:
                items.append((i + 1, "enum constant", m.group(1), documented(i)))
            continue
        if pending_stmt:
            pending_stmt = not code.endswith(";")
            continue
        if raw[:1].isspace() or code in ("{", "}") or code.startswith("extern \"C\""):
            continue
        m = re.match(r"(typedef\s+)?enum\s+(%s)\b(?!.*;)" % IDENT, code)
        if m and not code.endswith(";"):
            name = m.group(2)
            enums.add(name)
            in_enum = name
            items.append((i + 1, "enum", name, documented(i)))
            continue
        m = re.match(r"typedef\s+(.*)", code)
        if m:
            body = m.group(1)
            fp = re.search(r"\(\s*\*\s*(%s)\s*\)" % IDENT, body)
            name = fp.group(1) if fp else re.findall(IDENT, body.rstrip(";"))[-1]
            if name in enums and re.match(r"(enum\s+%s|u?int\d+_t)\s+%s\s*;$" % (re.escape(name), re.escape(name)), body):
                continue  # cbindgen's companion typedef of an enum
            items.append((i + 1, "typedef", name, documented(i)))
            pending_stmt = not code.endswith(";")
            continue
        m = re.match(r"struct\s+(%s)\s*\{?$" % IDENT, code)
        if m:
            items.append((i + 1, "struct", m.group(1), documented(i)))
            in_enum = "struct " + m.group(1)  # skip the body (fields are not checked)
            continue
        m = re.match(r"[A-Za-z_][^()]*?\b(%s)\s*\(" % IDENT, code)
        if m:
            items.append((i + 1, "function", m.group(1), documented(i)))
            pending_stmt = not code.endswith(";")
    return items


SAMPLE = """/* file comment */
#ifndef SAMPLE_H
#define SAMPLE_H

#define UNDOC_MACRO 1
/* a macro */
#define DOC_MACRO 2

/*
 an enum
 */
enum color
 {
  /* red */
  RED = 0,
  GREEN = 1,
  /*
   blue
   */
  BLUE,
};
#ifndef __cplusplus
typedef uint32_t color;
#endif // __cplusplus

enum undoc_enum {
  ONLY,
};

/* a handle */
typedef struct handle handle;

typedef struct bare bare;

/* a callback */
typedef void (*cb_t)(void *u, const char *m);

typedef int (*undoc_cb)(void);

/* */
int empty_doc(void);

/*
 documented
 */
int documented_fn(struct handle *h,
                  int x);

const char *undoc_fn(void);

void undoc_multi(int a,
                 int b);

#endif /* SAMPLE_H */
"""
SAMPLE_UNDOC = {
    ("macro", "UNDOC_MACRO"), ("enum constant", "GREEN"), ("enum", "undoc_enum"),
    ("enum constant", "ONLY"), ("typedef", "bare"), ("typedef", "undoc_cb"),
    ("function", "empty_doc"), ("function", "undoc_fn"), ("function", "undoc_multi"),
}
SAMPLE_DOC = {
    ("macro", "DOC_MACRO"), ("enum", "color"), ("enum constant", "RED"), ("enum constant", "BLUE"),
    ("typedef", "handle"), ("typedef", "cb_t"), ("function", "documented_fn"),
}


def self_test():
    items = scan(SAMPLE)
    got_undoc = {(k, n) for _, k, n, d in items if not d}
    got_doc = {(k, n) for _, k, n, d in items if d}
    ok = got_undoc == SAMPLE_UNDOC and got_doc == SAMPLE_DOC
    if not ok:
        print("self-test FAILED")
        print("  undocumented: missing %s, extra %s" % (SAMPLE_UNDOC - got_undoc, got_undoc - SAMPLE_UNDOC))
        print("  documented:   missing %s, extra %s" % (SAMPLE_DOC - got_doc, got_doc - SAMPLE_DOC))
        return 1
    print("self-test ok: %d items, %d undocumented found as expected" % (len(items), len(got_undoc)))
    return 0


def main(argv):
    if argv[1:] == ["--self-test"]:
        return self_test()
    path = argv[1] if len(argv) > 1 else "include/rktls.h"
    with open(path) as f:
        items = scan(f.read())
    bad = [(ln, k, n) for ln, k, n, d in items if not d]
    for ln, kind, name in bad:
        print("%s:%d: %s %s" % (path, ln, kind, name))
    kinds = {}
    for _, k, _, _ in items:
        kinds[k] = kinds.get(k, 0) + 1
    summary = ", ".join("%d %s" % (v, k) for k, v in sorted(kinds.items()))
    print("%s: %d items (%s); %d undocumented item(s)" % (path, len(items), summary, len(bad)))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
