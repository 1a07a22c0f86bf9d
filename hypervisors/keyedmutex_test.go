package hypervisors

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestKeyedMutexSameKeyIsExclusive(t *testing.T) {
	var k KeyedMutex
	var inside, most atomic.Int32
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 20 {
				unlock := k.Lock("vm\x00r-1-VM")
				n := inside.Add(1)
				for {
					m := most.Load()
					if n <= m || most.CompareAndSwap(m, n) {
						break
					}
				}
				time.Sleep(50 * time.Microsecond)
				inside.Add(-1)
				unlock()
			}
		}()
	}
	wg.Wait()
	if m := most.Load(); m != 1 {
		t.Errorf("%d callers held one key at once, want 1", m)
	}
	if n := entries(&k); n != 0 {
		t.Errorf("%d entries left after every unlock, want 0", n)
	}
}

func TestKeyedMutexWaitsAndOtherKeysDoNot(t *testing.T) {
	var k KeyedMutex
	unlockA := k.Lock("a")

	// Another key is free while "a" is held.
	got := make(chan struct{})
	go func() { k.Lock("b")(); close(got) }()
	select {
	case <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("Lock(b) waited for the holder of a")
	}

	// The same key waits for its holder.
	acquired := make(chan func())
	go func() { acquired <- k.Lock("a") }()
	select {
	case <-acquired:
		t.Fatal("Lock(a) succeeded while a was held")
	case <-time.After(100 * time.Millisecond):
	}
	if n := entries(&k); n != 1 {
		t.Errorf("%d entries while a is held and waited for, want 1", n)
	}
	unlockA()
	select {
	case unlock := <-acquired:
		unlock()
	case <-time.After(5 * time.Second):
		t.Fatal("Lock(a) still waiting after the holder released it")
	}
	if n := entries(&k); n != 0 {
		t.Errorf("%d entries left after every unlock, want 0", n)
	}
}

func entries(k *KeyedMutex) int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.locks)
}
