package worker

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"reflect"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"testing"

	"go.temporal.io/sdk/workflow"

	"github.com/sysvm/sysvm/activities"
	"github.com/sysvm/sysvm/internal/testenv"
)

// recorder is a Registrar that records names as the SDK derives them.
type recorder struct {
	workflows, activities []string
}

func (r *recorder) RegisterWorkflowWithOptions(_ interface{}, o workflow.RegisterOptions) {
	r.workflows = append(r.workflows, o.Name)
}

func (r *recorder) RegisterActivity(a interface{}) {
	v := reflect.ValueOf(a)
	if v.Kind() != reflect.Func {
		// A struct registers every exported method: exactly what must not happen.
		r.activities = append(r.activities, "struct "+v.Type().String())
		return
	}
	// The SDK's name of a function or method value (internal getFunctionName): the last
	// element of the runtime name, without the "-fm" of a method value.
	full := runtime.FuncForPC(v.Pointer()).Name()
	r.activities = append(r.activities, strings.TrimSuffix(full[strings.LastIndex(full, ".")+1:], "-fm"))
}

// workflowActivityCalls finds every activity workflow code calls: the second argument of each
// workflow.ExecuteActivity / ExecuteLocalActivity in workflows/*.go (tests excluded), a method
// value (a.LoadVM) or a string name. Any other argument fails, so no call escapes the check.
func workflowActivityCalls(t *testing.T) map[string]string {
	t.Helper()
	dir := filepath.Join(testenv.RepoRoot(), "workflows")
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	calls := map[string]string{}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		file, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(file, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok || (sel.Sel.Name != "ExecuteActivity" && sel.Sel.Name != "ExecuteLocalActivity") {
				return true
			}
			if pkg, ok := sel.X.(*ast.Ident); !ok || pkg.Name != "workflow" || len(call.Args) < 2 {
				return true
			}
			pos := fset.Position(call.Pos())
			where := filepath.Base(pos.Filename) + ":" + strconv.Itoa(pos.Line)
			switch arg := call.Args[1].(type) {
			case *ast.SelectorExpr:
				calls[arg.Sel.Name] = where
			case *ast.BasicLit:
				name, err := strconv.Unquote(arg.Value)
				if err != nil {
					t.Fatalf("%s: activity name %s: %v", where, arg.Value, err)
				}
				calls[name] = where
			default:
				t.Errorf("%s: activity passed as %T; name it as a method value (a.Name) or a string so this test sees it", where, arg)
			}
			return true
		})
	}
	return calls
}

// TestActivitiesMatchWorkflows: the worker registers exactly the activities workflow code
// calls, one by one (WorkflowActivities), and every workflow of Workflows.
func TestActivitiesMatchWorkflows(t *testing.T) {
	var r recorder
	Register(&r, &activities.Activities{})
	RegisterHealth(&r, &activities.Health{})
	registered := map[string]bool{}
	for _, name := range r.activities {
		if registered[name] {
			t.Errorf("activity %s registered twice", name)
		}
		registered[name] = true
	}
	calls := workflowActivityCalls(t)
	if len(calls) == 0 {
		t.Fatal("found no activity calls in workflows/: the parser is broken")
	}
	var missing, unused []string
	for name, where := range calls {
		if !registered[name] {
			missing = append(missing, name+" (called at "+where+")")
		}
	}
	for name := range registered {
		if _, ok := calls[name]; !ok {
			unused = append(unused, name)
		}
	}
	sort.Strings(missing)
	sort.Strings(unused)
	if len(missing) > 0 {
		t.Errorf("workflows call activities the worker does not register (add them to WorkflowActivities): %v", missing)
	}
	if len(unused) > 0 {
		t.Errorf("the worker registers activities no workflow calls (remove them from WorkflowActivities): %v", unused)
	}
	var want []string
	for _, w := range Workflows() {
		want = append(want, w.Name)
	}
	if !reflect.DeepEqual(r.workflows, want) {
		t.Errorf("registered workflows %v, want %v", r.workflows, want)
	}
}
