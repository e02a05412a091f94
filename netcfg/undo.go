package netcfg

import (
	"errors"
	"sync"
)

// undoStack runs cleanup steps in reverse order. A step that succeeds is
// dropped, one that fails is kept, so calling run again retries only what is
// left; once everything succeeded, further calls are no-ops.
type undoStack struct {
	mu      sync.Mutex
	steps   []func() error
	onEmpty func() // releases resources (namespace handle, sockets) once
}

func (u *undoStack) push(f func() error) { u.steps = append(u.steps, f) }

func (u *undoStack) run() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	var errs []error
	var failed []func() error
	for i := len(u.steps) - 1; i >= 0; i-- {
		if err := u.steps[i](); err != nil {
			errs = append(errs, err)
			failed = append([]func() error{u.steps[i]}, failed...)
		}
	}
	u.steps = failed
	if len(failed) == 0 && u.onEmpty != nil {
		u.onEmpty()
		u.onEmpty = nil
	}
	return errors.Join(errs...)
}
