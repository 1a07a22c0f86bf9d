package hypervisors

import "sync"

// KeyedMutex serialises work on one name (a VM, a template) without a global lock: callers
// holding different keys run in parallel, callers of the same key take turns. Drivers use it
// where the hypervisor itself would let two concurrent calls race (two CreateVM of one name
// both cloning, two seeds of one template both uploading). The zero value is ready to use; a
// key's entry lives only while someone holds or waits for it, so keys do not accumulate.
type KeyedMutex struct {
	mu    sync.Mutex
	locks map[string]*keyedEntry
}

type keyedEntry struct {
	mu   sync.Mutex
	refs int // holders and waiters of this key
}

// Lock takes the lock of key, waiting while another caller holds it; the returned func
// releases it and must be called exactly once.
func (k *KeyedMutex) Lock(key string) (unlock func()) {
	k.mu.Lock()
	if k.locks == nil {
		k.locks = map[string]*keyedEntry{}
	}
	e := k.locks[key]
	if e == nil {
		e = &keyedEntry{}
		k.locks[key] = e
	}
	e.refs++
	k.mu.Unlock()

	e.mu.Lock()
	return func() {
		e.mu.Unlock()
		k.mu.Lock()
		if e.refs--; e.refs == 0 {
			delete(k.locks, key)
		}
		k.mu.Unlock()
	}
}
