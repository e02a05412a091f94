package leasingtest

import "testing"

func TestMemory(t *testing.T) {
	m := NewMemory()
	Run(t, m, m.Gateway("b"))
}
