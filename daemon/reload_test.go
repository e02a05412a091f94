package daemon

import (
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/salvovpn/salvo/config"
)

// TestDiffKeys: keys are named as the configuration file spells them, and split into those a reload
// applies and those that need a restart.
func TestDiffKeys(t *testing.T) {
	old := &config.Server{Listen: []string{"0.0.0.0:51820"}, TunName: "salvo0", Routes: []string{"10.0.0.0/8"}, LogLevel: "info"}
	next := *old
	if r, s := diffKeys(old, &next); len(r)+len(s) != 0 {
		t.Fatalf("no change reported as %v %v", r, s)
	}
	next.Routes = []string{"10.0.0.0/8", "192.168.0.0/16"}
	next.LogLevel = "debug"
	next.FailedLoginEvery = config.Duration{Duration: time.Second}
	next.TunName = "salvo1"
	next.Listen = []string{"0.0.0.0:51821"}
	r, s := diffKeys(old, &next)
	if !slices.Equal(r, []string{"routes", "failed_login_interval", "log_level"}) || !slices.Equal(s, []string{"listen", "tun_name"}) {
		t.Fatalf("reloadable %v, restart %v", r, s)
	}
	// Every reloadable key must be a key of the file: a misspelt one would silently need a restart.
	var keys []string
	for f := range reflect.TypeFor[config.Server]().Fields() {
		keys = append(keys, f.Tag.Get("toml"))
	}
	for _, k := range ReloadableKeys {
		if !slices.Contains(keys, k) {
			t.Errorf("reloadable key %q is not a configuration key", k)
		}
	}
}
