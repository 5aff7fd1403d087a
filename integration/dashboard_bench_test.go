//go:build integration

package integration

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/meshrpc/mesh/client"
	"github.com/meshrpc/mesh/internal/testkit"
)

// BenchmarkDashboardServices measures the dashboard's services view in
// Chromium at 1,000 services, each with an instance and calls: the time
// from opening the page to its table of 1,000 rows (fetch, JSON, drawing)
// as the test sees it and as the page does (from navigation start),
// to redraw it sorted (a header click; drawing alone), and meshd's answer
// to /api/v1/services alone. One meshd (the
// embedded registry), one app serving the 1,000 services, calls to each for
// two steps of history. Run once: -benchtime 1x (make bench does).
func BenchmarkDashboardServices(b *testing.B) {
	const services = 1000
	h := startHost(b, "127.0.0.1", "off")
	srv := client.NewServer(client.Options{ServiceName: "svc-0000", Logger: testkit.Quiet})
	names := make([]string, services)
	for i := range names {
		names[i] = fmt.Sprintf("svc-%04d", i)
		srv.Register(names[i], "get", client.HandlerFunc(func(ctx context.Context, _ *client.Call) (*client.Response, error) {
			return &client.Response{Body: []byte("ok")}, nil
		}))
	}
	if err := srv.Advertise(context.Background(), h.addr); err != nil {
		b.Fatal(err)
	}
	defer srv.Shutdown(context.Background())
	c := dial(b, h.addr)
	deadline := time.Now().Add(2*10*time.Second + time.Second)
	for time.Now().Before(deadline) { // a call to every service, ~every 2 s
		var wg sync.WaitGroup
		for i := 0; i < services; i += 100 {
			wg.Go(func() {
				for _, n := range names[i : i+100] {
					ctx, cancel := context.WithTimeout(context.Background(), time.Second)
					c.Call(ctx, n, "get", nil, nil)
					cancel()
				}
			})
		}
		wg.Wait()
		time.Sleep(time.Second)
	}

	var api time.Duration
	for range 3 {
		start := time.Now()
		res, err := http.Get("http://" + h.admin + "/api/v1/services")
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		api += time.Since(start)
	}
	br := newBrowser(b)
	br.do("warm the browser", chromedp.Navigate("http://"+h.admin+"/ui/style.css"))
	b.ResetTimer()
	var first, inPage, redraw time.Duration
	for range b.N {
		start := time.Now()
		br.do("open the dashboard", chromedp.Navigate("about:blank"), chromedp.Navigate("http://"+h.admin+"/ui/"))
		br.waitJS("1,000 rows", fmt.Sprintf(`document.querySelectorAll("#services tbody tr").length === %d`, services), 30*time.Second)
		first += time.Since(start)
		inPage += time.Duration(eval[float64](br, `performance.getEntriesByName("services-drawn")[0].startTime`) * float64(time.Millisecond))
		ms := eval[float64](br, `(() => { const t = performance.now(); document.querySelector("#services th").click(); return performance.now() - t; })()`)
		redraw += time.Duration(ms * float64(time.Millisecond))
	}
	b.StopTimer()
	b.ReportMetric(float64(first.Milliseconds())/float64(b.N), "ms-to-1000-rows")
	b.ReportMetric(float64(inPage.Milliseconds())/float64(b.N), "ms-in-page")
	b.ReportMetric(float64(api.Milliseconds())/3, "ms-api")
	b.ReportMetric(float64(redraw.Microseconds())/1000/float64(b.N), "ms-redraw")
	b.Logf("screenshot: %s", br.shot("services-1000"))
	br.checkClean()
}
