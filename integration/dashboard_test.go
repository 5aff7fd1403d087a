//go:build integration

package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/meshrpc/mesh/client"
	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/internal/testconsul"
	"github.com/meshrpc/mesh/internal/testkit"
)

// screenshotDir is where the dashboard tests leave their screenshots
// (SCREENSHOTS, or .cache/screenshots in the checkout).
func screenshotDir(t testing.TB) string {
	dir := os.Getenv("SCREENSHOTS")
	if dir == "" {
		dir = filepath.Join("..", ".cache", "screenshots")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	abs, _ := filepath.Abs(dir)
	return abs
}

// browser is a headless Chromium (Debian's, which scripts/test.sh
// installs) driven by chromedp, recording what a user would not want to
// see: console errors, uncaught exceptions, and dialogs a script opened.
type browser struct {
	t        testing.TB
	ctx      context.Context
	mu       sync.Mutex
	problems []string
	shots    string
}

func newBrowser(t testing.TB) *browser {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("chromium not found (scripts/test.sh installs Debian's chromium): %v", err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path), chromedp.NoSandbox,
		chromedp.DisableGPU, chromedp.WindowSize(1300, 1000))
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(alloc)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	b := &browser{t: t, ctx: ctx, shots: screenshotDir(t)}
	dialogs := make(chan string, 16)
	if err := chromedp.Listen(ctx, func(ev any) {
		if d, ok := ev.(*page.EventJavascriptDialogOpening); ok {
			select {
			case dialogs <- d.Message:
			default:
			}
		}
	}); err != nil {
		t.Fatal(err)
	}
	go func() { // a dialog stalls the page until it is answered
		for msg := range dialogs {
			b.problem("a script opened a dialog: " + msg)
			chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: true})
		}
	}()
	go func() {
		for m, err := range chromedp.Console(ctx) {
			if err != nil {
				return
			}
			if m.Type == "error" || m.IsException() {
				b.problem("console: " + m.String())
			}
		}
	}()
	return b
}

func (b *browser) problem(p string) {
	b.mu.Lock()
	b.problems = append(b.problems, p)
	b.mu.Unlock()
}

func (b *browser) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		b.shot("failed")
		b.t.Fatalf("%s: %v", what, err)
	}
}

// eval evaluates a JavaScript expression in the page.
func eval[T any](b *browser, expr string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		b.t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// waitJS waits until a JavaScript expression is true in the page.
func (b *browser) waitJS(what, expr string, within time.Duration) time.Duration {
	b.t.Helper()
	start := time.Now()
	for {
		ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](expr))
		cancel()
		if err == nil && ok {
			return time.Since(start)
		}
		if time.Since(start) > within {
			b.shot("failed")
			text, _ := chromedp.Run(b.ctx, chromedp.Evaluate[string](`document.querySelector("main").innerText.slice(0, 3000)`))
			b.t.Fatalf("%s: not within %v (%v); the page says:\n%s", what, within, err, text)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// shot saves a screenshot of the page as dashboard-NAME.png in the
// screenshot directory, and returns its path.
func (b *browser) shot(name string) string {
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	buf, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Logf("screenshot %s: %v", name, err)
		return ""
	}
	path := filepath.Join(b.shots, "dashboard-"+name+".png")
	os.WriteFile(path, buf, 0o644)
	return path
}

func (b *browser) checkClean() {
	b.t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, p := range b.problems {
		b.t.Errorf("in the browser: %s", p)
	}
	b.problems = nil
}

// The dashboard, in a real browser, on three meshds with a real Consul and
// a real Jaeger: one meshd shows the three's services; figures move while
// calls run; an instance goes when its app stops; a failed call shows in the
// live tail with its explanation; a trace from Jaeger draws as a waterfall
// with meshd's decisions; a name made of HTML stays text. No console error
// all along.
func TestDashboardInABrowser(t *testing.T) {
	startJaeger(t)
	agent := testconsul.Start(t)
	flags := []string{"--zipkin", zipkinURL, "--trace-sample-rate", "1", "--trace-query", "http://127.0.0.1:16686", "--forget-after", "3s"}
	a := startHost(t, "127.0.0.1", agent.HTTPAddr, flags...)
	b := startHost(t, "127.0.0.2", agent.HTTPAddr, flags...)
	c := startHost(t, "127.0.0.3", agent.HTTPAddr, flags...)
	serve := func(h *host, service string) *client.Server {
		s := client.NewServer(client.Options{ServiceName: service, Logger: testkit.Quiet})
		s.Register(service, "ok", client.HandlerFunc(func(ctx context.Context, _ *client.Call) (*client.Response, error) {
			time.Sleep(2 * time.Millisecond)
			return &client.Response{Body: []byte("ok")}, nil
		}))
		s.Register(service, "fail", client.HandlerFunc(func(ctx context.Context, _ *client.Call) (*client.Response, error) {
			return nil, client.Errorf(frame.ErrCodeUnexpected, "failing on purpose")
		}))
		if err := s.Advertise(context.Background(), h.addr); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Shutdown(context.Background()) })
		return s
	}
	serve(a, "alpha")
	serve(b, "beta")
	serve(c, "gamma")
	leaving := serve(b, "gamma") // gamma's second instance, on b
	const evil = `<img src=x onerror=alert(1)>`
	evilSrv := client.NewServer(client.Options{ServiceName: evil, Logger: testkit.Quiet})
	evilSrv.Register(evil, "ok", client.HandlerFunc(func(ctx context.Context, _ *client.Call) (*client.Response, error) {
		return &client.Response{}, nil
	}))
	evilErr := evilSrv.Advertise(context.Background(), c.addr)
	t.Logf("advertising a service named %q: %v", evil, evilErr)
	defer evilSrv.Shutdown(context.Background())
	for _, h := range []*host{a, b, c} {
		testkit.WaitFor(t, 10*time.Second, "alpha, beta and gamma visible", func() bool { return seesServices(t, h, "alpha", "beta", "gamma") })
	}

	web := dial(t, a.addr)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	defer func() { close(stop); wg.Wait() }()
	for _, svc := range []string{"alpha", "beta", "gamma"} {
		wg.Go(func() { // 20 calls a second to each, from a
			for {
				select {
				case <-stop:
					return
				case <-time.After(50 * time.Millisecond):
					ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
					web.Call(ctx, svc, "ok", nil, nil)
					cancel()
				}
			}
		})
	}

	br := newBrowser(t)
	ui := "http://" + a.admin + "/ui/"
	br.do("open the dashboard", chromedp.Navigate(ui))
	// The whole mesh from a: its own and the other two meshds' services.
	took := br.waitJS("three meshds' services with calls", `(() => {
		const rows = [...document.querySelectorAll("#services tbody tr")].map(r => r.cells[0].textContent);
		return ["alpha", "beta", "gamma"].every(s => rows.includes(s)) && /3 of 3 meshds answered/.test(document.querySelector("#meshds").textContent);
	})()`, 30*time.Second)
	t.Logf("services of three meshds shown by one %v after the page opened", took.Round(time.Millisecond))
	t.Logf("screenshot: %s", br.shot("services"))

	// Figures move while calls run (the history steps every 10 s).
	callsOf := func(svc string) string {
		return eval[string](br, fmt.Sprintf(`(() => { const r = [...document.querySelectorAll("#services tbody tr")].find(r => r.cells[0].textContent === %q); return r ? r.cells[5].textContent : ""; })()`, svc))
	}
	before := callsOf("beta")
	took = br.waitJS("beta's calls grow", fmt.Sprintf(`(() => { const r = [...document.querySelectorAll("#services tbody tr")].find(r => r.cells[0].textContent === "beta"); return r && r.cells[5].textContent !== %q && Number(r.cells[5].textContent) > 0; })()`, before), 30*time.Second)
	t.Logf("beta's calls went from %s to %s in %v", before, callsOf("beta"), took.Round(time.Millisecond))

	// A name made of HTML is text: no image element, no dialog.
	if evilErr == nil {
		br.waitJS("the HTML-named service listed as text", fmt.Sprintf(`[...document.querySelectorAll("#services tbody tr")].some(r => r.cells[0].textContent === %q)`, evil), 20*time.Second)
	}
	if imgs := eval[int](br, `document.querySelectorAll("img").length`); imgs != 0 {
		t.Errorf("%d img elements in the page: a name was taken as markup", imgs)
	}

	// An instance goes when its app stops.
	br.waitJS("gamma's two instances", `document.querySelectorAll("#services tbody tr").length > 0 && [...document.querySelectorAll("#services tbody tr")].find(r => r.cells[0].textContent === "gamma").querySelectorAll(".chip").length === 2`, 20*time.Second)
	leavingID := eval[string](br, `[...document.querySelectorAll("#services tbody tr")].find(r => r.cells[0].textContent === "gamma").querySelector(".chip[title*='127.0.0.2']").dataset.instance`)
	leaving.Shutdown(context.Background())
	took = br.waitJS("gamma's instance on b gone", fmt.Sprintf(`!document.querySelector('.chip[data-instance=%q]')`, leavingID), 30*time.Second)
	t.Logf("gamma's instance %s gone from the page %v after its app stopped", leavingID, took.Round(time.Millisecond))
	t.Logf("screenshot: %s", br.shot("instance-gone"))

	// A failed call and its explanation in the live tail.
	br.do("open the live tail", chromedp.Navigate(ui+"#/tail"), chromedp.WaitVisible("#tail-failed"), chromedp.Click("#tail-failed"))
	time.Sleep(time.Second) // the stream reconnects with the filter
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	_, err := web.Call(ctx, "alpha", "fail", nil, nil)
	cancel()
	if err == nil {
		t.Fatal("alpha::fail answered")
	}
	web.Call(context.Background(), evil, "x", nil, nil) // refused or answered: either way a row with that name
	took = br.waitJS("the failed call in the tail", `[...document.querySelectorAll("#tail .call.failed")].some(c => c.textContent.includes("alpha::fail") && c.querySelector(".outcome").textContent === "unexpected" && c.querySelector(".why").textContent.includes("alpha@"))`, 10*time.Second)
	t.Logf("alpha::fail in the live tail with its explanation %v after the call", took.Round(time.Millisecond))
	br.waitJS("the HTML-named call in the tail, as text", fmt.Sprintf(`[...document.querySelectorAll("#tail .call")].some(c => c.textContent.includes(%q))`, evil), 10*time.Second)
	if imgs := eval[int](br, `document.querySelectorAll("img").length`); imgs != 0 {
		t.Errorf("%d img elements in the tail: a name was taken as markup", imgs)
	}
	t.Logf("screenshot: %s", br.shot("tail"))

	// A trace from Jaeger as a waterfall, with meshd's routing decision on
	// both hops (beta is on another host).
	br.do("open beta", chromedp.Navigate(ui+"#/service/beta"), chromedp.WaitVisible("#traces button"))
	// A trace's last hop may reach Jaeger after its first: ask again until
	// the slowest trace has both.
	deadline := time.Now().Add(30 * time.Second)
	for {
		br.do("ask for traces", chromedp.Click("#traces button"))
		br.waitJS("the traces answered", `!document.querySelector("#traces button") && !document.querySelector("#traces").textContent.includes("reading traces")`, 10*time.Second)
		if eval[int](br, `document.querySelectorAll("#traces a.trace-link").length`) > 0 {
			br.do("open a trace", chromedp.Click("#traces a.trace-link"))
			br.waitJS("a waterfall", `!!document.querySelector(".waterfall .span-bar div")`, 10*time.Second)
			if eval[bool](br, `[...document.querySelectorAll(".waterfall .mesh-decision")].some(e => e.textContent.includes("hop first") && e.textContent.includes("beta@")) && [...document.querySelectorAll(".waterfall .mesh-decision")].some(e => e.textContent.includes("hop last"))`) {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no trace of beta drawn with both hops: %s", eval[string](br, `document.querySelector("#traces").innerText`))
		}
		br.do("back to the service", chromedp.Navigate(ui+"#/service/alpha"), chromedp.Navigate(ui+"#/service/beta"), chromedp.WaitVisible("#traces button"))
		time.Sleep(time.Second)
	}
	spans := eval[int](br, `document.querySelectorAll(".waterfall .span-row").length`)
	t.Logf("a trace of beta drawn as a waterfall of %d spans, each hop with meshd's decision", spans)
	t.Logf("screenshot: %s", br.shot("trace"))
	br.checkClean()
}
