package membudget

import "testing"

func TestLimit(t *testing.T) {
	l := NewLimit(100)
	steps := []struct {
		reserve int64
		ok      bool
		used    int64
	}{{60, true, 60}, {41, false, 60}, {40, true, 100}, {1, false, 100}}
	for i, s := range steps {
		if got := l.Reserve(s.reserve); got != s.ok || l.Used() != s.used {
			t.Fatalf("step %d: Reserve(%d) = %v, used %d; want %v, %d", i, s.reserve, got, l.Used(), s.ok, s.used)
		}
	}
	l.Release(100)
	if l.Used() != 0 || l.Max() != 100 {
		t.Fatalf("after release: used %d, max %d", l.Used(), l.Max())
	}
	defer func() {
		if r := recover(); r != "membudget: released more than reserved" {
			t.Fatalf("over-release: recovered %v", r)
		}
	}()
	l.Release(1)
}

func TestUnlimited(t *testing.T) {
	if !Unlimited.Reserve(1 << 62) {
		t.Fatal("Unlimited refused a charge")
	}
	Unlimited.Release(1 << 62)
}
