package xapisim

import (
	"errors"
	"time"
)

const classTask = "task"

// taskRec is XAPI's task class: the handle of an Async.* call or an HTTP import.
type taskRec struct {
	UUID              string            `xapi:"uuid"`
	NameLabel         string            `xapi:"name_label"`
	NameDescription   string            `xapi:"name_description"`
	AllowedOperations []string          `xapi:"allowed_operations"`
	CurrentOperations map[string]string `xapi:"current_operations"`
	Created           time.Time         `xapi:"created"`
	Finished          time.Time         `xapi:"finished"`
	Status            string            `xapi:"status"`
	ResidentOn        string            `xapi:"resident_on"`
	Progress          float64           `xapi:"progress"`
	Type              string            `xapi:"type"`
	Result            string            `xapi:"result"`
	ErrorInfo         []string          `xapi:"error_info"`
	OtherConfig       map[string]string `xapi:"other_config,rw"`
	SubtaskOf         string            `xapi:"subtask_of"`
	Subtasks          []string          `xapi:"subtasks"`
	Backtrace         string            `xapi:"backtrace"`
}

func newTaskClass() *class { return newClass(classTask, taskRec{}) }

func (s *Server) registerTask() {
	s.methods["task.create"] = &method{name: "task.create", params: []param{pString("label"), pString("description")},
		fn: func(c *call) (any, error) {
			label := c.str(0)
			desc := c.str(1)
			ref := s.newTask(label)
			t, _ := lookup[taskRec](s.db, classTask, ref)
			t.NameDescription = desc
			return ref, nil
		}}
	s.methods["task.destroy"] = &method{name: "task.destroy", params: []param{pRef("self", classTask)},
		fn: func(c *call) (any, error) {
			ref := c.ref(0)
			s.db.remove(classTask, ref)
			return "", nil
		}}
}

// newTask creates a pending task (the caller holds the lock).
func (s *Server) newTask(label string) string {
	master := NullRef
	if refs, pools := all[poolRec](s.db, classPool); len(refs) > 0 {
		master = pools[0].Master
	}
	return s.db.add(classTask, &taskRec{
		UUID: newUUID(), NameLabel: "Async." + label, AllowedOperations: []string{"cancel"},
		CurrentOperations: map[string]string{}, Created: time.Now().UTC(), Status: "pending",
		ResidentOn: master, Type: "<none/>", ErrorInfo: []string{}, OtherConfig: map[string]string{},
		SubtaskOf: NullRef, Subtasks: []string{},
	})
}

// completeTask records an operation's outcome in its task: the result as the XML-RPC
// <value> XAPI stores, or the ErrorDescription (the caller holds the lock).
func (s *Server) completeTask(ref string, res any, err error) {
	t, f := lookup[taskRec](s.db, classTask, ref)
	if f != nil {
		return // destroyed meanwhile
	}
	t.Finished, t.Progress, t.AllowedOperations = time.Now().UTC(), 1, []string{}
	var fl *Failure
	switch {
	case err == nil:
		t.Status = "success"
		if str, ok := res.(string); !ok || str != "" {
			t.Result = xmlValue(res)
		}
	case errors.As(err, &fl):
		t.Status, t.ErrorInfo = "failure", fl.Description()
	default:
		t.Status, t.ErrorInfo = "failure", []string{CodeInternalError, err.Error()}
	}
}

// setTaskProgress updates a pending task's progress (0..1).
func (s *Server) setTaskProgress(ref string, p float64) {
	if t, f := lookup[taskRec](s.db, classTask, ref); f == nil && t.Status == "pending" {
		t.Progress = p
	}
}
