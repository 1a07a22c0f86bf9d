package xapisim

import "reflect"

// argKind is how a message parameter decodes from the wire. Every method declares its
// parameters as a list of params, and decodeArgs is the one place that turns a call's wire
// values (JSON-RPC numbers, XML-RPC strings) into typed arguments, failing as XAPI's
// unmarshaller does: FIELD_TYPE_ERROR(name) for a value of the wrong type, HANDLE_INVALID(class,
// ref) for a ref that names no object. Handlers then read the decoded values with the call's
// accessors (str, int, bool, strMap, rec, ref, object, value), which cannot fail.
type argKind int

const (
	argString    argKind = iota // a string
	argInt                      // an int: a number on JSON-RPC, a decimal string on XML-RPC
	argBool                     // a bool (or "true"/"false")
	argStrMap                   // a (string -> string) map
	argRecord                   // a struct of fields (a constructor's record), decoded by param.fields
	argStrings                  // a list of strings (record fields only)
	argRef                      // a ref of param.class that must name an object
	argRefOrNull                // a ref of param.class, or OpaqueRef:NULL
	argValue                    // any wire value, converted by the handler (a generated setter's value)
)

// param is one parameter of a message, after session_id.
type param struct {
	name  string
	kind  argKind
	class string // argRef, argRefOrNull
	// fields of an argRecord, decoded in order as XAPI's record unmarshaller does.
	fields []field
}

// field is one field of a record parameter. A missing required field is
// FIELD_TYPE_ERROR(name), as is a field of the wrong type; a missing optional one takes def
// (nil: the kind's zero value, an empty map or list).
type field struct {
	name     string
	kind     argKind // argString, argInt, argBool, argStrMap or argStrings
	optional bool
	def      any
}

func fReq(name string, kind argKind) field { return field{name: name, kind: kind} }
func fOpt(name string, kind argKind, def any) field {
	return field{name: name, kind: kind, optional: true, def: def}
}

// record is a decoded record parameter: each declared field, typed.
type record map[string]any

func (r record) str(k string) string               { return r[k].(string) }
func (r record) int(k string) int64                { return r[k].(int64) }
func (r record) bool(k string) bool                { return r[k].(bool) }
func (r record) strMap(k string) map[string]string { return r[k].(map[string]string) }
func (r record) strings(k string) []string         { return r[k].([]string) }

func pString(name string) param { return param{name: name, kind: argString} }
func pInt(name string) param    { return param{name: name, kind: argInt} }
func pBool(name string) param   { return param{name: name, kind: argBool} }
func pStrMap(name string) param { return param{name: name, kind: argStrMap} }
func pRecord(name string, fields ...field) param {
	return param{name: name, kind: argRecord, fields: fields}
}
func pValue(name string) param { return param{name: name, kind: argValue} }
func pRef(name, class string) param {
	return param{name: name, kind: argRef, class: class}
}
func pRefOrNull(name, class string) param {
	return param{name: name, kind: argRefOrNull, class: class}
}

// decodeArgs decodes the wire values of a call (session_id removed) by the method's params, in
// order, so the first bad parameter is the one reported. Optional trailing params left out
// decode to their zero values. It runs with the server lock held (refs are looked up).
func decodeArgs(d *db, params []param, wire []any) ([]any, *Failure) {
	out := make([]any, len(params))
	for i, p := range params {
		if i >= len(wire) {
			out[i] = zeroArg(p.kind)
			continue
		}
		v, ok := decodeArg(d, p, wire[i])
		if f, isFail := v.(*Failure); isFail {
			return nil, f
		}
		if !ok {
			return nil, fail(CodeFieldTypeError, p.name)
		}
		out[i] = v
	}
	return out, nil
}

// decodeArg decodes one value; ok is false for a type error, and a *Failure value is a ref
// naming no object.
func decodeArg(d *db, p param, v any) (any, bool) {
	switch p.kind {
	case argString:
		s, ok := v.(string)
		return s, ok
	case argInt:
		n, err := asInt(v)
		return n, err == nil
	case argBool:
		b, err := asBool(v)
		return b, err == nil
	case argStrMap:
		m, err := asStringMap(v)
		return m, err == nil
	case argRecord:
		m, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		r, f := decodeRecord(p.fields, m)
		if f != nil {
			return f, true
		}
		return r, true
	case argStrings:
		l, err := asStrings(v)
		return l, err == nil
	case argRef, argRefOrNull:
		ref, ok := v.(string)
		if !ok {
			return nil, false
		}
		if p.kind == argRefOrNull && ref == NullRef {
			return ref, true
		}
		if _, ok := d.classes[p.class].objs[ref]; !ok {
			return handleInvalid(p.class, ref), true
		}
		return ref, true
	case argValue:
		return v, true
	}
	return nil, false
}

// decodeRecord decodes the declared fields of a record, in order.
func decodeRecord(fields []field, m map[string]any) (record, *Failure) {
	out := make(record, len(fields))
	for _, fl := range fields {
		v, present := m[fl.name]
		if !present {
			if !fl.optional {
				return nil, fail(CodeFieldTypeError, fl.name)
			}
			if fl.def != nil {
				out[fl.name] = fl.def
			} else {
				out[fl.name] = zeroArg(fl.kind)
			}
			continue
		}
		dv, ok := decodeArg(nil, param{name: fl.name, kind: fl.kind}, v)
		if !ok {
			return nil, fail(CodeFieldTypeError, fl.name)
		}
		out[fl.name] = dv
	}
	return out, nil
}

func zeroArg(k argKind) any {
	switch k {
	case argInt:
		return int64(0)
	case argBool:
		return false
	case argStrMap:
		return map[string]string{}
	case argRecord:
		return record{}
	case argStrings:
		return []string{}
	case argValue:
		return nil
	}
	return ""
}

// The accessors of decoded arguments. Decoding already checked every type, so they cannot fail.

func (c *call) str(i int) string               { return c.args[i].(string) }
func (c *call) int(i int) int64                { return c.args[i].(int64) }
func (c *call) bool(i int) bool                { return c.args[i].(bool) }
func (c *call) strMap(i int) map[string]string { return c.args[i].(map[string]string) }
func (c *call) rec(i int) record               { return c.args[i].(record) }
func (c *call) ref(i int) string               { return c.args[i].(string) }
func (c *call) value(i int) any                { return c.args[i] }
func (c *call) paramOf(i int) param            { return c.m.params[i] }
func (c *call) object(i int) any               { return c.s.db.classes[c.paramOf(i).class].objs[c.ref(i)] }
func (c *call) setValue(i int, t reflect.Type) (reflect.Value, *Failure) {
	nv, err := convertParam(c.value(i), t)
	if err != nil {
		return reflect.Value{}, fail(CodeFieldTypeError, c.paramOf(i).name)
	}
	return nv, nil
}
