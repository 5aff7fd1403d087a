package thriftjson

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"go.uber.org/thriftrw/compile"
	"go.uber.org/thriftrw/wire"
)

func structToWire(fields compile.FieldGroup, obj map[string]any, what string) (wire.Struct, error) {
	var s wire.Struct
	for name := range obj {
		if !slices.ContainsFunc(fields, func(f *compile.FieldSpec) bool { return f.Name == name }) {
			return s, fmt.Errorf("%s: no field %q (there are %s)", what, name, fieldNames(fields))
		}
	}
	for _, f := range fields {
		v, ok := obj[f.Name]
		if !ok || v == nil {
			if f.Required {
				return s, fmt.Errorf("%s: field %q is required", what, f.Name)
			}
			continue
		}
		wv, err := toWire(f.Type, v, what+"."+f.Name)
		if err != nil {
			return s, err
		}
		s.Fields = append(s.Fields, wire.Field{ID: f.ID, Value: wv})
	}
	return s, nil
}

func fieldNames(fields compile.FieldGroup) string {
	var n []string
	for _, f := range fields {
		n = append(n, f.Name)
	}
	if len(n) == 0 {
		return "none"
	}
	return strings.Join(n, ", ")
}

func toWire(t compile.TypeSpec, v any, at string) (wire.Value, error) {
	bad := func(want string) (wire.Value, error) {
		return wire.Value{}, fmt.Errorf("%s: want %s, got %s", at, want, jsonKind(v))
	}
	switch t := compile.RootTypeSpec(t).(type) {
	case *compile.BoolSpec:
		b, ok := v.(bool)
		if !ok {
			return bad("true or false")
		}
		return wire.NewValueBool(b), nil
	case *compile.I8Spec, *compile.I16Spec, *compile.I32Spec, *compile.I64Spec:
		n, ok := v.(json.Number)
		if !ok {
			return bad("an integer")
		}
		i, err := strconv.ParseInt(string(n), 10, 64)
		if err != nil {
			return bad("an integer")
		}
		switch t.(type) {
		case *compile.I8Spec:
			if i < math.MinInt8 || i > math.MaxInt8 {
				return bad("an i8")
			}
			return wire.NewValueI8(int8(i)), nil
		case *compile.I16Spec:
			if i < math.MinInt16 || i > math.MaxInt16 {
				return bad("an i16")
			}
			return wire.NewValueI16(int16(i)), nil
		case *compile.I32Spec:
			if i < math.MinInt32 || i > math.MaxInt32 {
				return bad("an i32")
			}
			return wire.NewValueI32(int32(i)), nil
		}
		return wire.NewValueI64(i), nil
	case *compile.DoubleSpec:
		n, ok := v.(json.Number)
		f, err := n.Float64()
		if !ok || err != nil {
			return bad("a number")
		}
		return wire.NewValueDouble(f), nil
	case *compile.StringSpec:
		s, ok := v.(string)
		if !ok {
			return bad("a string")
		}
		return wire.NewValueString(s), nil
	case *compile.BinarySpec:
		s, ok := v.(string)
		b, err := base64.StdEncoding.DecodeString(s)
		if !ok || err != nil {
			return bad("base64")
		}
		return wire.NewValueBinary(b), nil
	case *compile.EnumSpec:
		if s, ok := v.(string); ok {
			for _, it := range t.Items {
				if it.Name == s {
					return wire.NewValueI32(it.Value), nil
				}
			}
			return wire.Value{}, fmt.Errorf("%s: enum %s has no item %q", at, t.Name, s)
		}
		n, ok := v.(json.Number)
		i, err := strconv.ParseInt(string(n), 10, 32)
		if !ok || err != nil {
			return bad("an item of enum " + t.Name)
		}
		return wire.NewValueI32(int32(i)), nil
	case *compile.StructSpec:
		obj, ok := v.(map[string]any)
		if !ok {
			return bad("an object")
		}
		s, err := structToWire(t.Fields, obj, at)
		if err != nil {
			return wire.Value{}, err
		}
		return wire.NewValueStruct(s), nil
	case *compile.ListSpec, *compile.SetSpec:
		arr, ok := v.([]any)
		if !ok {
			return bad("an array")
		}
		elem := elemOf(t)
		vals := make([]wire.Value, len(arr))
		for i, e := range arr {
			w, err := toWire(elem, e, fmt.Sprintf("%s[%d]", at, i))
			if err != nil {
				return wire.Value{}, err
			}
			vals[i] = w
		}
		list := wire.ValueListFromSlice(elem.TypeCode(), vals)
		if _, isSet := t.(*compile.SetSpec); isSet {
			return wire.NewValueSet(list), nil
		}
		return wire.NewValueList(list), nil
	case *compile.MapSpec:
		var items []wire.MapItem
		add := func(k, val any, where string) error {
			kw, err := toWire(t.KeySpec, k, where+" key")
			if err != nil {
				return err
			}
			vw, err := toWire(t.ValueSpec, val, where)
			if err != nil {
				return err
			}
			items = append(items, wire.MapItem{Key: kw, Value: vw})
			return nil
		}
		switch m := v.(type) {
		case map[string]any:
			for _, k := range sortedKeys(m) {
				if err := add(k, m[k], at+"["+strconv.Quote(k)+"]"); err != nil {
					return wire.Value{}, err
				}
			}
		case []any:
			for i, p := range m {
				pair, ok := p.([]any)
				if !ok || len(pair) != 2 {
					return wire.Value{}, fmt.Errorf("%s[%d]: want a [key, value] pair", at, i)
				}
				if err := add(pair[0], pair[1], fmt.Sprintf("%s[%d]", at, i)); err != nil {
					return wire.Value{}, err
				}
			}
		default:
			return bad("an object or an array of [key, value] pairs")
		}
		return wire.NewValueMap(wire.MapItemListFromSlice(t.KeySpec.TypeCode(), t.ValueSpec.TypeCode(), items)), nil
	}
	return wire.Value{}, fmt.Errorf("%s: type %s is not supported", at, t.ThriftName())
}

func elemOf(t compile.TypeSpec) compile.TypeSpec {
	if l, ok := t.(*compile.ListSpec); ok {
		return l.ValueSpec
	}
	return t.(*compile.SetSpec).ValueSpec
}

func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case json.Number:
		return "a number"
	case string:
		return "a string"
	case []any:
		return "an array"
	}
	return "an object"
}

func structFromWire(fields compile.FieldGroup, s wire.Struct) (map[string]any, error) {
	obj := map[string]any{}
	for _, fv := range s.Fields {
		i := slices.IndexFunc(fields, func(f *compile.FieldSpec) bool { return f.ID == fv.ID })
		if i < 0 {
			continue // a field this IDL does not know: skipped, as Thrift readers do
		}
		v, err := fromWire(fields[i].Type, fv.Value)
		if err != nil {
			return nil, fmt.Errorf("field %s: %w", fields[i].Name, err)
		}
		obj[fields[i].Name] = v
	}
	return obj, nil
}

var errType = errors.New("the answer's type differs from the IDL's")

func fromWire(t compile.TypeSpec, v wire.Value) (any, error) {
	root := compile.RootTypeSpec(t)
	if v.Type() != root.TypeCode() {
		return nil, fmt.Errorf("%w: %s, want %s", errType, v.Type(), root.ThriftName())
	}
	switch t := root.(type) {
	case *compile.BoolSpec:
		return v.GetBool(), nil
	case *compile.I8Spec:
		return v.GetI8(), nil
	case *compile.I16Spec:
		return v.GetI16(), nil
	case *compile.I32Spec:
		return v.GetI32(), nil
	case *compile.I64Spec:
		return json.Number(strconv.FormatInt(v.GetI64(), 10)), nil
	case *compile.DoubleSpec:
		return v.GetDouble(), nil
	case *compile.StringSpec:
		return v.GetString(), nil
	case *compile.BinarySpec:
		return base64.StdEncoding.EncodeToString(v.GetBinary()), nil
	case *compile.EnumSpec:
		n := v.GetI32()
		for _, it := range t.Items {
			if it.Value == n {
				return it.Name, nil
			}
		}
		return n, nil
	case *compile.StructSpec:
		return structFromWire(t.Fields, v.GetStruct())
	case *compile.ListSpec, *compile.SetSpec:
		list := v.GetList()
		if v.Type() == wire.TSet {
			list = v.GetSet()
		}
		out := []any{}
		err := list.ForEach(func(e wire.Value) error {
			x, err := fromWire(elemOf(t), e)
			out = append(out, x)
			return err
		})
		return out, err
	case *compile.MapSpec:
		stringKeys := false
		switch compile.RootTypeSpec(t.KeySpec).(type) {
		case *compile.StringSpec, *compile.EnumSpec:
			stringKeys = true
		}
		obj, pairs := map[string]any{}, []any{}
		err := v.GetMap().ForEach(func(it wire.MapItem) error {
			k, err := fromWire(t.KeySpec, it.Key)
			if err != nil {
				return err
			}
			val, err := fromWire(t.ValueSpec, it.Value)
			if stringKeys {
				obj[fmt.Sprint(k)] = val
			} else {
				pairs = append(pairs, []any{k, val})
			}
			return err
		})
		if stringKeys {
			return obj, err
		}
		return pairs, err
	}
	return nil, fmt.Errorf("type %s is not supported", root.ThriftName())
}
