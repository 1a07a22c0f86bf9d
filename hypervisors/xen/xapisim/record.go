package xapisim

import (
	"fmt"
	"reflect"
	"sort"
	"strings"
	"time"

	"github.com/google/uuid"
)

// NullRef is XAPI's null reference.
const NullRef = "OpaqueRef:NULL"

func newRef() string { return "OpaqueRef:" + uuid.NewString() }

// A class is one XAPI class (VM, VIF, SR, ...) in the simulator's database: its objects are
// pointers to record structs whose fields carry `xapi:"<wire name>[,rw]"` tags. From the tags
// the simulator derives XAPI's generated messages: get_all, get_all_records, get_record,
// get_by_uuid, get_by_name_label, get_<field>, and set_<field> / add_to_<field> /
// remove_from_<field> for read-write fields, exactly as xapi's datamodel generates them.
type class struct {
	name   string
	typ    reflect.Type
	fields []fieldInfo
	byWire map[string]int
	objs   map[string]any
	order  []string
	// noGetAll hides get_all / get_all_records (XAPI has none for session).
	noGetAll bool
}

type fieldInfo struct {
	wire  string
	index int
	rw    bool
}

func newClass(name string, proto any) *class {
	t := reflect.TypeOf(proto)
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	c := &class{name: name, typ: t, byWire: map[string]int{}, objs: map[string]any{}}
	for i := 0; i < t.NumField(); i++ {
		tag := t.Field(i).Tag.Get("xapi")
		if tag == "" {
			continue
		}
		wire, opt, _ := strings.Cut(tag, ",")
		c.byWire[wire] = len(c.fields)
		c.fields = append(c.fields, fieldInfo{wire: wire, index: i, rw: opt == "rw"})
	}
	if _, ok := c.byWire["uuid"]; !ok {
		panic("xapisim: class " + name + " has no uuid field")
	}
	return c
}

func (c *class) add(obj any) string {
	ref := newRef()
	c.objs[ref] = obj
	c.order = append(c.order, ref)
	return ref
}

func (c *class) remove(ref string) {
	delete(c.objs, ref)
	for i, r := range c.order {
		if r == ref {
			c.order = append(c.order[:i], c.order[i+1:]...)
			break
		}
	}
}

func (c *class) refs() []string { return append([]string(nil), c.order...) }

func (c *class) field(obj any, wire string) reflect.Value {
	return reflect.ValueOf(obj).Elem().Field(c.fields[c.byWire[wire]].index)
}

func (c *class) uuidOf(obj any) string { return c.field(obj, "uuid").String() }

func (c *class) byUUID(id string) (string, bool) {
	for _, ref := range c.order {
		if c.uuidOf(c.objs[ref]) == id {
			return ref, true
		}
	}
	return "", false
}

// record renders an object as XAPI renders a record: a struct keyed by wire field names.
func (c *class) record(obj any) map[string]any {
	v := reflect.ValueOf(obj).Elem()
	out := make(map[string]any, len(c.fields))
	for _, f := range c.fields {
		out[f.wire] = wireValue(v.Field(f.index))
	}
	return out
}

// wireValue copies a record field into a fresh wire value (so later mutation of the record
// cannot race with encoding).
func wireValue(v reflect.Value) any {
	switch x := v.Interface().(type) {
	case []string:
		if x == nil {
			return []any{}
		}
		out := make([]any, len(x))
		for i, s := range x {
			out[i] = s
		}
		return out
	case map[string]string:
		out := make(map[string]any, len(x))
		for k, s := range x {
			out[k] = s
		}
		return out
	case map[string]float64:
		out := make(map[string]any, len(x))
		for k, f := range x {
			out[k] = f
		}
		return out
	case int:
		return int64(x)
	default:
		return x
	}
}

// lookup returns the object behind a ref of a class, or HANDLE_INVALID.
func lookup[T any](d *db, className, ref string) (*T, *Failure) {
	c := d.classes[className]
	obj, ok := c.objs[ref]
	if !ok {
		return nil, handleInvalid(className, ref)
	}
	return obj.(*T), nil
}

// all returns every object of a class in creation order, with its ref.
func all[T any](d *db, className string) ([]string, []*T) {
	c := d.classes[className]
	refs := c.refs()
	objs := make([]*T, len(refs))
	for i, r := range refs {
		objs[i] = c.objs[r].(*T)
	}
	return refs, objs
}

type db struct {
	classes map[string]*class
}

func (d *db) add(className string, obj any) string { return d.classes[className].add(obj) }

func (d *db) remove(className, ref string) { d.classes[className].remove(ref) }

// registerGenerated adds the generated messages of every class to the method table, unless a
// class file already registered a hand-written method of the same name.
func (s *Server) registerGenerated() {
	names := make([]string, 0, len(s.db.classes))
	for n := range s.db.classes {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		c := s.db.classes[n]
		s.registerClass(c)
	}
}

func (s *Server) registerClass(c *class) {
	add := func(name string, params []param, fn handler) {
		full := c.name + "." + name
		if _, ok := s.methods[full]; ok {
			return
		}
		s.methods[full] = &method{name: full, params: params, fn: fn, readOnly: true}
	}
	if !c.noGetAll {
		add("get_all", nil, func(cl *call) (any, error) {
			refs := c.refs()
			out := make([]any, len(refs))
			for i, r := range refs {
				out[i] = r
			}
			return out, nil
		})
		add("get_all_records", nil, func(cl *call) (any, error) {
			out := map[string]any{}
			for _, r := range c.order {
				out[r] = c.record(c.objs[r])
			}
			return out, nil
		})
	}
	add("get_record", []param{pRef("self", c.name)}, func(cl *call) (any, error) {
		obj := cl.object(0)
		return c.record(obj), nil
	})
	add("get_by_uuid", []param{pString("uuid")}, func(cl *call) (any, error) {
		id := cl.str(0)
		ref, ok := c.byUUID(id)
		if !ok {
			return nil, fail(CodeUUIDInvalid, c.name, id)
		}
		return ref, nil
	})
	if _, ok := c.byWire["name_label"]; ok {
		add("get_by_name_label", []param{pString("label")}, func(cl *call) (any, error) {
			label := cl.str(0)
			out := []any{}
			for _, r := range c.order {
				if c.field(c.objs[r], "name_label").String() == label {
					out = append(out, r)
				}
			}
			return out, nil
		})
	}
	for _, f := range c.fields {
		f := f
		add("get_"+f.wire, []param{pRef("self", c.name)}, func(cl *call) (any, error) {
			obj := cl.object(0)
			return wireValue(reflect.ValueOf(obj).Elem().Field(f.index)), nil
		})
		if !f.rw {
			continue
		}
		full := c.name + ".set_" + f.wire
		if _, ok := s.methods[full]; !ok {
			s.methods[full] = &method{name: full, params: []param{pRef("self", c.name), pValue("value")}, fn: func(cl *call) (any, error) {
				obj := cl.object(0)
				fv := reflect.ValueOf(obj).Elem().Field(f.index)
				nv, ferr := cl.setValue(1, fv.Type())
				if ferr != nil {
					return nil, ferr
				}
				fv.Set(nv)
				return "", nil
			}}
		}
		if ft := c.typ.Field(f.index).Type; ft.Kind() == reflect.Map && ft.Elem().Kind() == reflect.String {
			s.registerMapOps(c, f)
		}
	}
}

// registerMapOps adds add_to_<field> and remove_from_<field> for a read-write string map.
func (s *Server) registerMapOps(c *class, f fieldInfo) {
	addName := c.name + ".add_to_" + f.wire
	if _, ok := s.methods[addName]; !ok {
		s.methods[addName] = &method{name: addName, params: []param{pRef("self", c.name), pString("key"), pString("value")}, fn: func(cl *call) (any, error) {
			obj := cl.object(0)
			k := cl.str(1)
			v := cl.str(2)
			fv := reflect.ValueOf(obj).Elem().Field(f.index)
			if fv.IsNil() {
				fv.Set(reflect.ValueOf(map[string]string{}))
			}
			m := fv.Interface().(map[string]string)
			if _, dup := m[k]; dup {
				return nil, fail(CodeMapDuplicateKey, c.name, f.wire, cl.ref(0), k)
			}
			m[k] = v
			return "", nil
		}}
	}
	rmName := c.name + ".remove_from_" + f.wire
	if _, ok := s.methods[rmName]; !ok {
		s.methods[rmName] = &method{name: rmName, params: []param{pRef("self", c.name), pString("key")}, fn: func(cl *call) (any, error) {
			obj := cl.object(0)
			k := cl.str(1)
			fv := reflect.ValueOf(obj).Elem().Field(f.index)
			if !fv.IsNil() {
				delete(fv.Interface().(map[string]string), k)
			}
			return "", nil
		}}
	}
}

// convertParam turns a decoded wire value (from JSON or XML-RPC) into a record field's type.
// XML-RPC carries XAPI ints as strings, JSON-RPC as numbers; both are accepted.
func convertParam(v any, t reflect.Type) (reflect.Value, error) {
	switch t.Kind() {
	case reflect.String:
		s, ok := v.(string)
		if !ok {
			return reflect.Value{}, fmt.Errorf("want string, got %T", v)
		}
		return reflect.ValueOf(s), nil
	case reflect.Bool:
		b, err := asBool(v)
		if err != nil {
			return reflect.Value{}, err
		}
		return reflect.ValueOf(b), nil
	case reflect.Int64:
		n, err := asInt(v)
		if err != nil {
			return reflect.Value{}, err
		}
		return reflect.ValueOf(n), nil
	case reflect.Float64:
		f, err := asFloat(v)
		if err != nil {
			return reflect.Value{}, err
		}
		return reflect.ValueOf(f), nil
	case reflect.Slice:
		if t.Elem().Kind() != reflect.String {
			break
		}
		s, err := asStrings(v)
		if err != nil {
			return reflect.Value{}, err
		}
		return reflect.ValueOf(s), nil
	case reflect.Map:
		if t.Elem().Kind() != reflect.String {
			break
		}
		m, err := asStringMap(v)
		if err != nil {
			return reflect.Value{}, err
		}
		return reflect.ValueOf(m), nil
	case reflect.Struct:
		if t == reflect.TypeOf(time.Time{}) {
			if tm, ok := v.(time.Time); ok {
				return reflect.ValueOf(tm), nil
			}
			if s, ok := v.(string); ok {
				tm, err := time.Parse(xapiTimeLayout, s)
				if err != nil {
					return reflect.Value{}, err
				}
				return reflect.ValueOf(tm), nil
			}
		}
	}
	return reflect.Value{}, fmt.Errorf("unsupported field type %s", t)
}

// xapiTimeLayout is how XAPI renders datetimes on the wire (ISO 8601 basic, UTC).
const xapiTimeLayout = "20060102T15:04:05Z"
