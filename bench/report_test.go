package bench

import (
	"strings"
	"testing"
)

func TestMarkdownStanding(t *testing.T) {
	md := fakeResults().Markdown()
	// The medians side by side come first, with Salvo's ratio to each reference measured (wireguard-go and
	// bare here; openvpn FAILED, so it has neither a column nor a ratio).
	head := "| metric | better | bare | wireguard-go | salvo | salvo vs wireguard-go | salvo vs bare |"
	i, j := strings.Index(md, head), strings.Index(md, "| metric | better | system |")
	if i < 0 || j < i {
		t.Fatalf("the standing table does not come before the full one:\n%s", md)
	}
	for _, want := range []string{
		"| TCP 1 stream (Gbit/s) | higher | 2.20 | 4.40 | 6.60 | 1.50x | 3.00x |",
		"| tunnel CPU s per GB (TCP at 1G) | lower | — | 1.82 | 1.21 |",
		"| UDP 64 B loss at 100k pkt/s (%) | lower |",
		"- openvpn FAILED: did not come up",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
	if strings.Contains(md[i:j], "salvo vs openvpn") {
		t.Error("a ratio to a FAILED system")
	}
}
