package buildinfo

import "testing"

func TestString(t *testing.T) {
	for _, c := range []struct {
		in   Info
		want string
	}{
		{Info{Version: "dev", GoVersion: "go1.26.0"}, "dev go1.26.0"},
		{Info{Version: "0.3.0", Commit: "6276bed1234567890abc", GoVersion: "go1.26.0"}, "0.3.0 (commit 6276bed12345) go1.26.0"},
		{Info{Version: "0.3.0", Commit: "abc", Modified: true}, "0.3.0 (commit abc, modified)"},
	} {
		if got := c.in.String(); got != c.want {
			t.Errorf("%+v: got %q, want %q", c.in, got, c.want)
		}
	}
}

func TestReadHasGoVersion(t *testing.T) {
	// A test binary carries build information; the Go version is always recorded.
	if got := Read(); got.GoVersion == "" || got.Version != Version {
		t.Fatalf("Read() = %+v", got)
	}
}
