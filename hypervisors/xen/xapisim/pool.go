package xapisim

const classPool = "pool"

// poolRec is XAPI's pool class (one per simulated pool).
type poolRec struct {
	UUID            string            `xapi:"uuid"`
	NameLabel       string            `xapi:"name_label,rw"`
	NameDescription string            `xapi:"name_description,rw"`
	Master          string            `xapi:"master"`
	DefaultSR       string            `xapi:"default_SR,rw"`
	SuspendImageSR  string            `xapi:"suspend_image_SR,rw"`
	CrashDumpSR     string            `xapi:"crash_dump_SR,rw"`
	HAEnabled       bool              `xapi:"ha_enabled"`
	OtherConfig     map[string]string `xapi:"other_config,rw"`
	Tags            []string          `xapi:"tags,rw"`
}

func newPoolClass() *class { return newClass(classPool, poolRec{}) }

// registerPool: the pool class has only generated messages here.
func (s *Server) registerPool() {}

// defaultSR is the pool's default SR ref (NullRef when unset).
func (s *Server) defaultSR() string {
	refs, pools := all[poolRec](s.db, classPool)
	if len(refs) == 0 || pools[0].DefaultSR == "" {
		return NullRef
	}
	return pools[0].DefaultSR
}
