#pragma once
// A restricted, non-executing pickle machine for the `data.pkl` of torch.save / save_pretrained.
//
// Plain pickle is a program: GLOBAL imports any callable and REDUCE calls it, so `torch.load`
// without weights_only runs arbitrary code (docs/model.md §11.4). This machine never calls anything:
// it understands the opcodes torch.save emits (protocol 2, plus the protocol-4 forms STACK_GLOBAL,
// SHORT_BINUNICODE, MEMOIZE, FRAME) and GLOBALs from a fixed allowlist only:
//   collections.OrderedDict, torch._utils._rebuild_tensor_v2, torch._utils._rebuild_parameter,
//   torch.{Float,Half,BFloat16,Double,Long,Int,Short,Char,Byte,Bool}Storage, torch.Size.
// REDUCE is interpreted for exactly those (building a dict, a tensor description, a tuple), BUILD
// only on a dict (the OrderedDict `_metadata` state, ignored), APPEND(S) only on lists and
// SETITEM(S) only on dicts (CVE-2026-24747 class). Any other opcode or global is refused with its
// name and byte offset. Nothing from the file is ever executed, imported or written.
//
// Resource bounds (R4): objects live in one arena and refer to each other by index, so a memo get
// shares instead of deep-copying (candle's memo bomb), cycles cannot leak and nothing recurses;
// string lengths are checked against the remaining bytes before any allocation; opcodes, objects,
// stack size, MARK nesting and memo entries have caps. torch.Size shares its (immutable) tuple;
// every other byte the machine builds (strings, tuple/list/dict items, tensor sizes and strides,
// the records it returns) is charged, before it is allocated, against a budget of a small multiple
// of the pickle's size, so a memoised tuple reused many times cannot amplify memory. The arena
// holds at most one object per opcode.
#include <cstdint>
#include <cstring>
#include <new>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "aligngpt/config.h"
#include "aligngpt/io/dtype.h"
#include "aligngpt/io/file.h"

namespace aligngpt::io::pickle {

struct limits {
    std::uint64_t max_ops = 1u << 24;
    std::uint64_t max_objects = 1u << 22;
    std::uint64_t max_stack = 1u << 20;
    std::uint64_t max_marks = 4096;  // MARK nesting depth
    std::uint64_t max_memo = 1u << 20;
    /// Budget for the bytes built (see above): min_bytes + bytes_per_input_byte * pickle size.
    /// torch.save's state dicts need about 5 per pickle byte (the tests check that 8 suffices).
    std::uint64_t bytes_per_input_byte = 32;
    std::uint64_t min_bytes = 1u << 20;
};

/// One tensor of the state dict as the pickle describes it (validated by torch_bin.h).
struct tensor_record {
    std::string name;
    dtype type;                      // from the storage class
    std::string storage_key;         // <root>/data/<key>
    std::int64_t storage_numel = 0;  // elements, as the persistent id declares
    std::int64_t offset = 0;         // storage_offset, in elements
    std::vector<std::int64_t> size, stride;
};

namespace detail {
enum class kind : std::uint8_t { none, boolean, integer, floating, string, tuple, list, dict, global, storage, tensor };
inline const char* kind_name(kind k) {
    static const char* n[] = {"None", "bool", "int", "float", "str", "tuple", "list", "dict", "global", "storage", "tensor"};
    return n[static_cast<int>(k)];
}
enum class global_id : std::uint8_t { ordered_dict, rebuild_tensor_v2, rebuild_parameter, storage, torch_size };

struct object {
    kind k = kind::none;
    global_id g = global_id::ordered_dict;  // for globals
    dtype type = dtype::F32;                // for storage globals and storages
    std::int64_t i = 0;                     // int / bool value; storage numel; tensor record index
    double f = 0;
    std::string s;                     // str; storage key
    std::vector<std::uint32_t> items;  // tuple/list items; dict keys and values interleaved
};

inline const char* op_name(unsigned char op) {
    switch (op) {
        case 0x80: return "PROTO";
        case 0x95: return "FRAME";
        case '}': return "EMPTY_DICT";
        case ']': return "EMPTY_LIST";
        case ')': return "EMPTY_TUPLE";
        case '(': return "MARK";
        case 'X': return "BINUNICODE";
        case 0x8c: return "SHORT_BINUNICODE";
        case 'J': return "BININT";
        case 'K': return "BININT1";
        case 'M': return "BININT2";
        case 0x8a: return "LONG1";
        case 0x8b: return "LONG4";
        case 'G': return "BINFLOAT";
        case 0x88: return "NEWTRUE";
        case 0x89: return "NEWFALSE";
        case 'N': return "NONE";
        case 't': return "TUPLE";
        case 0x85: return "TUPLE1";
        case 0x86: return "TUPLE2";
        case 0x87: return "TUPLE3";
        case 'q': return "BINPUT";
        case 'r': return "LONG_BINPUT";
        case 0x94: return "MEMOIZE";
        case 'h': return "BINGET";
        case 'j': return "LONG_BINGET";
        case 's': return "SETITEM";
        case 'u': return "SETITEMS";
        case 'a': return "APPEND";
        case 'e': return "APPENDS";
        case 'c': return "GLOBAL";
        case 0x93: return "STACK_GLOBAL";
        case 'R': return "REDUCE";
        case 'Q': return "BINPERSID";
        case 'b': return "BUILD";
        case '.': return "STOP";
        case 'i': return "INST";
        case 'o': return "OBJ";
        case 0x81: return "NEWOBJ";
        case 0x92: return "NEWOBJ_EX";
        case 0x82: return "EXT1";
        case 0x83: return "EXT2";
        case 0x84: return "EXT4";
        case 'P': return "PERSID";
        case '2': return "DUP";
        case '0': return "POP";
        case '1': return "POP_MARK";
        case 'V': return "UNICODE";
        case 'S': return "STRING";
        case 'T': return "BINSTRING";
        case 'U': return "SHORT_BINSTRING";
        case 'B': return "BINBYTES";
        case 'C': return "SHORT_BINBYTES";
        case 0x8e: return "BINBYTES8";
        case 0x8d: return "BINUNICODE8";
        case 'I': return "INT";
        case 'L': return "LONG";
        case 'F': return "FLOAT";
        case 'l': return "LIST";
        case 'd': return "DICT";
        case 'g': return "GET";
        case 'p': return "PUT";
        case 0x8f: return "EMPTY_SET";
        case 0x90: return "ADDITEMS";
        case 0x91: return "FROZENSET";
        case 0x96: return "BYTEARRAY8";
        case 0x97: return "NEXT_BUFFER";
        case 0x98: return "READONLY_BUFFER";
        default: return "unknown opcode";
    }
}

/// The allowlist (docs/model.md §11.4). Returns false for anything else.
inline bool resolve_global(std::string_view mod, std::string_view name, object& o) {
    o.k = kind::global;
    if (mod == "collections" && name == "OrderedDict") return o.g = global_id::ordered_dict, true;
    if (mod == "torch._utils" && name == "_rebuild_tensor_v2") return o.g = global_id::rebuild_tensor_v2, true;
    if (mod == "torch._utils" && name == "_rebuild_parameter") return o.g = global_id::rebuild_parameter, true;
    if (mod == "torch" && name == "Size") return o.g = global_id::torch_size, true;
    static const std::pair<const char*, dtype> storages[] = {{"FloatStorage", dtype::F32},     {"HalfStorage", dtype::F16},
                                                             {"BFloat16Storage", dtype::BF16}, {"DoubleStorage", dtype::F64},
                                                             {"LongStorage", dtype::I64},      {"IntStorage", dtype::I32},
                                                             {"ShortStorage", dtype::I16},     {"CharStorage", dtype::I8},
                                                             {"ByteStorage", dtype::U8},       {"BoolStorage", dtype::BOOL}};
    if (mod == "torch")
        for (const auto& [n, t] : storages)
            if (name == n) return o.g = global_id::storage, o.type = t, true;
    return false;
}
}  // namespace detail

/// Runs the restricted machine over `pkl` and returns the flat {name -> tensor} dict it builds.
/// `who` (file and entry) starts every error message.
class machine {
public:
    machine(std::string_view pkl, std::string who, const limits& lim = {})
        : in_(pkl), who_(std::move(who)), lim_(lim), budget_(lim.min_bytes + lim.bytes_per_input_byte * pkl.size()) {}

    std::vector<tensor_record> state_dict() {
        try {
            return state_dict_unchecked();
        } catch (const std::bad_alloc&) {  // the budget should prevent it; still the file's error
            fail(who_, ": out of memory while reading the pickle (", in_.size(), " bytes)");
        }
    }

private:
    std::vector<tensor_record> state_dict_unchecked() {
        const std::uint32_t result = run();
        const detail::object& top = obj(result);
        ALIGNGPT_CHECK(top.k == detail::kind::dict, who_, ": the pickle's result is a ", detail::kind_name(top.k),
                       ", expected a dict of tensors (a state_dict)");
        std::vector<tensor_record> out;
        std::unordered_map<std::string_view, int> seen;
        for (std::size_t j = 0; j < top.items.size(); j += 2) {
            const detail::object& k = obj(top.items[j]);
            const detail::object& v = obj(top.items[j + 1]);
            ALIGNGPT_CHECK(k.k == detail::kind::string, who_, ": state_dict key ", j / 2, " is a ", detail::kind_name(k.k),
                           ", expected a str");
            ALIGNGPT_CHECK(v.k == detail::kind::tensor, who_, ": state_dict entry ", io::detail::quote_name(k.s), " is a ",
                           detail::kind_name(v.k), ", expected a tensor");
            ALIGNGPT_CHECK(seen.emplace(k.s, 0).second, who_, ": state_dict key ", io::detail::quote_name(k.s), " appears twice");
            const tensor_record& r = tensors_[std::size_t(v.i)];  // one tensor may back several keys (tied weights)
            charge(sizeof(tensor_record) + k.s.size() + r.storage_key.size() + 8 * (r.size.size() + r.stride.size()));
            out.push_back(r);
            out.back().name = k.s;
        }
        return out;
    }

    using kind = detail::kind;

    [[noreturn]] void bad(const std::string& m) const {
        fail(who_, ": pickle offset ", at_, ": ", detail::op_name(op_), ": ", m);
    }
    const detail::object& obj(std::uint32_t i) const { return objects_[i]; }
    /// Counts `n` bytes about to be built; refuses once the budget is spent.
    void charge(std::uint64_t n) {
        bytes_ += n;
        if (bytes_ > budget_)
            fail(who_, ": pickle offset ", at_, ": ", detail::op_name(op_), ": builds more than ", budget_,
                 " bytes of strings, containers and tensor shapes from a ", in_.size(), "-byte pickle (limit ",
                 lim_.bytes_per_input_byte, " per input byte + ", lim_.min_bytes, "; a memoised value reused too often?)");
    }
    std::uint32_t make(detail::object o) {
        if (objects_.size() >= lim_.max_objects)
            bad("more than " + std::to_string(lim_.max_objects) + " objects (limit max_objects)");
        objects_.push_back(std::move(o));
        return std::uint32_t(objects_.size() - 1);
    }
    std::uint32_t make(kind k, std::int64_t i = 0) {
        detail::object o;
        o.k = k;
        o.i = i;
        return make(std::move(o));
    }
    void push(std::uint32_t i) {
        if (stack_.size() >= lim_.max_stack) bad("stack deeper than " + std::to_string(lim_.max_stack) + " (limit max_stack)");
        stack_.push_back(i);
    }
    std::size_t fence() const { return marks_.empty() ? 0 : marks_.back(); }
    std::uint32_t pop() {
        if (stack_.size() <= fence()) bad("stack underflow");
        const std::uint32_t v = stack_.back();
        stack_.pop_back();
        return v;
    }
    std::uint32_t top() {
        if (stack_.size() <= fence()) bad("stack underflow");
        return stack_.back();
    }
    std::vector<std::uint32_t> pop_mark() {
        if (marks_.empty()) bad("no MARK on the stack");
        std::vector<std::uint32_t> items(stack_.begin() + std::ptrdiff_t(marks_.back()), stack_.end());
        stack_.resize(marks_.back());
        marks_.pop_back();
        return items;
    }
    const char* take(std::uint64_t n) {
        if (n > in_.size() - pos_)
            bad("needs " + std::to_string(n) + " bytes but only " + std::to_string(in_.size() - pos_) + " remain");
        const char* p = in_.data() + pos_;
        pos_ += std::size_t(n);
        return p;
    }
    std::uint64_t uint(int bytes) {
        std::uint64_t v = 0;
        std::memcpy(&v, take(std::uint64_t(bytes)), std::size_t(bytes));
        return v;
    }
    std::uint32_t string(std::uint64_t len) {
        const char* p = take(len);  // checked against the remaining bytes before allocating
        const std::string_view s(p, std::size_t(len));
        if (io::detail::utf8_error_at(s) != std::string_view::npos) bad("string is not valid UTF-8");
        charge(len);
        detail::object o;
        o.k = kind::string;
        o.s = std::string(s);
        return make(std::move(o));
    }
    std::string line() {  // GLOBAL's "module\n" and "name\n"
        const std::size_t nl = in_.find('\n', pos_);
        if (nl == std::string_view::npos || nl - pos_ > 256) bad("missing newline within 256 bytes");
        std::string s(in_.substr(pos_, nl - pos_));
        pos_ = nl + 1;
        return s;
    }
    void global(const std::string& mod, const std::string& name) {
        detail::object o;
        if (!detail::resolve_global(mod, name, o))
            bad("global " + io::detail::quote_name(mod + "." + name, 120) +
                " is not allowed (only collections.OrderedDict, "
                "torch._utils._rebuild_tensor_v2/_rebuild_parameter, torch.*Storage, torch.Size); refusing to load");
        push(make(std::move(o)));
    }
    void memo_put(std::uint64_t id) {
        if (memo_.size() >= lim_.max_memo && !memo_.count(id))
            bad("more than " + std::to_string(lim_.max_memo) + " memo entries");
        memo_[id] = top();
    }
    void memo_get(std::uint64_t id) {
        auto it = memo_.find(id);
        if (it == memo_.end()) bad("memo id " + std::to_string(id) + " was never PUT");
        push(it->second);  // shared, never copied
    }
    std::uint32_t tuple(std::vector<std::uint32_t> items) {
        charge(4 * items.size());
        detail::object o;
        o.k = kind::tuple;
        o.items = std::move(items);
        return make(std::move(o));
    }

    std::uint32_t run();
    // By index, never a copy: a memoised argument tuple may be large and reused.
    std::uint32_t reduce(std::uint32_t callable, std::uint32_t args);
    std::uint32_t persistent(std::uint32_t pid);

    std::string_view in_;
    std::string who_;
    limits lim_;
    std::uint64_t budget_, bytes_ = 0;
    std::size_t pos_ = 0, at_ = 0;
    unsigned char op_ = 0;
    std::vector<detail::object> objects_;
    std::vector<std::uint32_t> stack_;
    std::vector<std::size_t> marks_;
    std::unordered_map<std::uint64_t, std::uint32_t> memo_;
    std::vector<tensor_record> tensors_;
};

inline std::uint32_t machine::run() {
    for (std::uint64_t ops = 0;; ops++) {
        if (pos_ >= in_.size()) fail(who_, ": pickle offset ", pos_, ": truncated (no STOP opcode)");
        if (ops >= lim_.max_ops) fail(who_, ": pickle offset ", pos_, ": more than ", lim_.max_ops, " opcodes (limit max_ops)");
        at_ = pos_;
        op_ = static_cast<unsigned char>(in_[pos_++]);
        switch (op_) {
            case 0x80:
                if (uint(1) > 5) bad("protocol above 5");
                break;
            case 0x95:  // FRAME: the next n bytes are opcodes, read as usual; only the length is checked
                if (uint(8) > in_.size() - pos_) bad("frame longer than the remaining bytes");
                break;
            case '}': push(make(kind::dict)); break;
            case ']': push(make(kind::list)); break;
            case ')': push(make(kind::tuple)); break;
            case '(':
                if (marks_.size() >= lim_.max_marks) bad("MARK nesting deeper than " + std::to_string(lim_.max_marks));
                marks_.push_back(stack_.size());
                break;
            case 'X': push(string(uint(4))); break;
            case 0x8c: push(string(uint(1))); break;
            case 'J': push(make(kind::integer, std::int32_t(std::uint32_t(uint(4))))); break;
            case 'K': push(make(kind::integer, std::int64_t(uint(1)))); break;
            case 'M': push(make(kind::integer, std::int64_t(uint(2)))); break;
            case 0x8a: {
                const std::uint64_t n = uint(1);
                if (n > 8) bad(std::to_string(n) + "-byte integer (at most 8 bytes supported)");
                std::uint64_t v = n ? uint(int(n)) : 0;
                if (n && n < 8 && (v >> (8 * n - 1)) & 1) v |= ~std::uint64_t(0) << (8 * n);  // sign-extend
                push(make(kind::integer, std::int64_t(v)));
                break;
            }
            case 'G': {
                std::uint64_t be = uint(8), le = 0;
                for (int k = 0; k < 8; k++) le = (le << 8) | ((be >> (8 * k)) & 0xFF);
                detail::object o;
                o.k = kind::floating;
                std::memcpy(&o.f, &le, 8);
                push(make(std::move(o)));
                break;
            }
            case 0x88: push(make(kind::boolean, 1)); break;
            case 0x89: push(make(kind::boolean, 0)); break;
            case 'N': push(make(kind::none)); break;
            case 't': push(tuple(pop_mark())); break;
            case 0x85:
            case 0x86:
            case 0x87: {
                std::vector<std::uint32_t> items(std::size_t(op_ - 0x84));
                for (std::size_t k = items.size(); k-- > 0;) items[k] = pop();
                push(tuple(std::move(items)));
                break;
            }
            case 'q': memo_put(uint(1)); break;
            case 'r': memo_put(uint(4)); break;
            case 0x94: memo_put(memo_.size()); break;
            case 'h': memo_get(uint(1)); break;
            case 'j': memo_get(uint(4)); break;
            case 's':
            case 'u': {
                std::vector<std::uint32_t> kv;
                if (op_ == 's') {
                    const auto v = pop();
                    kv = {pop(), v};
                } else
                    kv = pop_mark();
                const std::uint32_t d = top();
                if (objects_[d].k != kind::dict)
                    bad(std::string("target is a ") + detail::kind_name(objects_[d].k) + ", not a dict");
                if (kv.size() % 2) bad("odd number of items for key/value pairs");
                charge(4 * kv.size());
                auto& items = objects_[d].items;
                // Pairs are appended; a repeated key (Python would silently keep the last) is refused
                // by state_dict(), naming it.
                items.insert(items.end(), kv.begin(), kv.end());
                break;
            }
            case 'a':
            case 'e': {
                std::vector<std::uint32_t> vs;
                if (op_ == 'a')
                    vs = {pop()};
                else
                    vs = pop_mark();
                const std::uint32_t l = top();
                if (objects_[l].k != kind::list)
                    bad(std::string("target is a ") + detail::kind_name(objects_[l].k) + ", not a list");
                charge(4 * vs.size());
                objects_[l].items.insert(objects_[l].items.end(), vs.begin(), vs.end());
                break;
            }
            case 'c': {
                const std::string m = line();
                global(m, line());
                break;
            }
            case 0x93: {
                const std::uint32_t n = pop(), m = pop();
                if (objects_[n].k != kind::string || objects_[m].k != kind::string) bad("module and name must be str");
                global(objects_[m].s, objects_[n].s);
                break;
            }
            case 'R': {
                const std::uint32_t args = pop(), fn = pop();
                push(reduce(fn, args));
                break;
            }
            case 'Q': {
                const std::uint32_t pid = pop();
                push(persistent(pid));
                break;
            }
            case 'b': {
                const std::uint32_t state = pop();
                const detail::object& target = objects_[top()];
                if (target.k != kind::dict)
                    bad(std::string("BUILD on a ") + detail::kind_name(target.k) + " (only an OrderedDict's state is accepted)");
                const kind sk = objects_[state].k;
                if (sk != kind::none && sk != kind::dict)
                    bad(std::string("OrderedDict state is a ") + detail::kind_name(sk) + ", expected a dict");
                break;  // the state is OrderedDict._metadata (module versions): ignored
            }
            case '.':
                if (!marks_.empty() || stack_.size() != 1)
                    bad("STOP with " + std::to_string(stack_.size()) + " stack items and " + std::to_string(marks_.size()) +
                        " open MARKs (expected 1 and 0)");
                return stack_.back();
            default:
                bad("opcode 0x" + std::string(1, "0123456789abcdef"[op_ >> 4]) + "0123456789abcdef"[op_ & 15] +
                    " is not supported by this restricted reader");
        }
    }
}

// References into objects_ are not kept across make(), which may grow it.
inline std::uint32_t machine::reduce(std::uint32_t fn_index, std::uint32_t args_index) {
    const detail::object& fn = objects_[fn_index];
    if (fn.k != kind::global) bad(std::string("callable is a ") + detail::kind_name(fn.k) + ", not an allowed global");
    if (objects_[args_index].k != kind::tuple)
        bad(std::string("arguments are a ") + detail::kind_name(objects_[args_index].k) + ", expected a tuple");
    const std::vector<std::uint32_t>& a = objects_[args_index].items;
    auto arg_is = [&](std::size_t i, kind k) { return objects_[a[i]].k == k; };
    switch (fn.g) {
        case detail::global_id::ordered_dict:
            if (!a.empty()) bad("OrderedDict(...) with arguments is not supported");
            return make(kind::dict);
        case detail::global_id::torch_size:
            if (a.size() != 1 || !arg_is(0, kind::tuple)) bad("torch.Size expects one tuple");
            return a[0];  // tuples are immutable here: share, never copy
        case detail::global_id::rebuild_parameter:
            if (a.size() != 3 || !arg_is(0, kind::tensor) || !arg_is(1, kind::boolean) || !arg_is(2, kind::dict) ||
                !objects_[a[2]].items.empty())
                bad("_rebuild_parameter expects (tensor, requires_grad, empty OrderedDict)");
            return a[0];
        case detail::global_id::rebuild_tensor_v2: {
            if ((a.size() != 6 && a.size() != 7) || !arg_is(0, kind::storage) || !arg_is(1, kind::integer) ||
                !arg_is(2, kind::tuple) || !arg_is(3, kind::tuple) || !arg_is(4, kind::boolean) || !arg_is(5, kind::dict) ||
                !objects_[a[5]].items.empty() || (a.size() == 7 && !arg_is(6, kind::dict)))
                bad("_rebuild_tensor_v2 expects (storage, offset, size tuple, stride tuple, requires_grad, empty hooks"
                    " OrderedDict[, metadata dict])");
            const detail::object& st = objects_[a[0]];
            charge(sizeof(tensor_record) + st.s.size() + 8 * (objects_[a[2]].items.size() + objects_[a[3]].items.size()));
            tensor_record r;
            r.type = st.type;
            r.storage_key = st.s;
            r.storage_numel = st.i;
            r.offset = objects_[a[1]].i;
            for (int which = 2; which <= 3; which++)
                for (std::uint32_t e : objects_[a[std::size_t(which)]].items) {
                    if (objects_[e].k != kind::integer) bad("_rebuild_tensor_v2: size/stride items must be int");
                    (which == 2 ? r.size : r.stride).push_back(objects_[e].i);
                }
            if (r.size.size() != r.stride.size()) bad("_rebuild_tensor_v2: size and stride have different lengths");
            tensors_.push_back(std::move(r));
            return make(kind::tensor, std::int64_t(tensors_.size() - 1));
        }
        case detail::global_id::storage: break;
    }
    bad("calling a storage class is not supported");
}

// ('storage', <StorageType>, key, location, numel) -> a storage object.
inline std::uint32_t machine::persistent(std::uint32_t pid_index) {
    const detail::object& pid = objects_[pid_index];
    const std::vector<std::uint32_t>& a = pid.items;
    if (pid.k != kind::tuple || a.size() != 5 || objects_[a[0]].k != kind::string || objects_[a[0]].s != "storage" ||
        objects_[a[1]].k != kind::global || objects_[a[1]].g != detail::global_id::storage || objects_[a[2]].k != kind::string ||
        objects_[a[3]].k != kind::string || objects_[a[4]].k != kind::integer)
        bad("persistent id must be ('storage', torch.<T>Storage, key str, location str, numel int)");
    const std::string& loc = objects_[a[3]].s;
    const bool cuda =
        loc.rfind("cuda", 0) == 0 &&
        (loc.size() == 4 || (loc[4] == ':' && loc.size() > 5 && loc.find_first_not_of("0123456789", 5) == std::string::npos));
    if (loc != "cpu" && !cuda) bad("storage location " + io::detail::quote_name(loc) + " (expected cpu or cuda:N)");
    if (objects_[a[4]].i < 0) bad("storage numel " + std::to_string(objects_[a[4]].i) + " is negative");
    charge(objects_[a[2]].s.size());  // the key is copied
    detail::object o;
    o.k = kind::storage;
    o.type = objects_[a[1]].type;
    o.s = objects_[a[2]].s;
    o.i = objects_[a[4]].i;
    return make(std::move(o));
}

}  // namespace aligngpt::io::pickle
