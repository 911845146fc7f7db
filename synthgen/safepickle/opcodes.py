"""The pickle opcodes PickleVM interprets (byte -> name; each has an `op_NAME` method) and those
that create no new object. Every other opcode is refused."""

# opcodes that only move or combine what exists (not counted against the object budget). Every
# other opcode is counted, DUP, MARK and the memo's PUT/GET included: each keeps one more
# reference alive (a stack slot, a mark, a memo entry), and a file of 1-5 byte opcodes could
# otherwise hold tens of times its size in references (a 10 MB MEMOIZE flood took 692 MB).
NO_NEW_OBJECT = {"POP", "POP_MARK", "FRAME", "PROTO", "STOP", "APPEND", "APPENDS", "SETITEM", "SETITEMS", "ADDITEMS",
                 "BUILD"}
OPS = {
    0x80: "PROTO", 0x95: "FRAME", ord("."): "STOP",
    ord("("): "MARK", ord("0"): "POP", ord("1"): "POP_MARK", ord("2"): "DUP",
    ord("N"): "NONE", 0x88: "NEWTRUE", 0x89: "NEWFALSE",
    ord("J"): "BININT", ord("K"): "BININT1", ord("M"): "BININT2", 0x8A: "LONG1", 0x8B: "LONG4",
    ord("G"): "BINFLOAT",
    0x8C: "SHORT_BINUNICODE", ord("X"): "BINUNICODE", 0x8D: "BINUNICODE8",
    ord("C"): "SHORT_BINBYTES", ord("B"): "BINBYTES", 0x8E: "BINBYTES8",
    ord("U"): "SHORT_BINSTRING", ord("T"): "BINSTRING",
    ord(")"): "EMPTY_TUPLE", ord("t"): "TUPLE", 0x85: "TUPLE1", 0x86: "TUPLE2", 0x87: "TUPLE3",
    ord("]"): "EMPTY_LIST", ord("l"): "LIST", ord("}"): "EMPTY_DICT", ord("d"): "DICT",
    0x8F: "EMPTY_SET", 0x91: "FROZENSET",
    ord("a"): "APPEND", ord("e"): "APPENDS", ord("s"): "SETITEM", ord("u"): "SETITEMS", 0x90: "ADDITEMS",
    ord("p"): "PUT", ord("q"): "BINPUT", ord("r"): "LONG_BINPUT", 0x94: "MEMOIZE",
    ord("g"): "GET", ord("h"): "BINGET", ord("j"): "LONG_BINGET",
    ord("c"): "GLOBAL", 0x93: "STACK_GLOBAL", ord("R"): "REDUCE", 0x81: "NEWOBJ", ord("b"): "BUILD",
    ord("Q"): "BINPERSID",
}  # not here (refused): INST, OBJ, NEWOBJ_EX, EXT*, PERSID, BYTEARRAY8, NEXT_BUFFER, READONLY_BUFFER, INT, LONG, ...
