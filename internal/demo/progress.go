package demo

import (
	"fmt"
	"io"
	"os"
	"time"
)

// plainProgressEvery is how often the progress line is printed, as a plain
// line, when the output is not a terminal (a pipe, a file, a CI log).
const plainProgressEvery = 5 * time.Second

// progressPrinter prints the demo's progress line. On a terminal it redraws
// one line in place with \r; anywhere else \r frames would pile up in the
// captured log, so it prints a plain line at most every plainProgressEvery
// (none for a run shorter than that) and the final line.
type progressPrinter struct {
	w       io.Writer
	tty     bool
	every   time.Duration
	now     func() time.Time
	last    time.Time // when the last plain line was printed (or the start)
	onFrame bool      // a \r frame is on screen, not yet ended by a newline
}

func newProgressPrinter(w io.Writer) *progressPrinter {
	return &progressPrinter{w: w, tty: isTerminal(w), every: plainProgressEvery, now: time.Now, last: time.Now()}
}

// update shows line as the current progress.
func (p *progressPrinter) update(line string) {
	if p.tty {
		fmt.Fprintf(p.w, "\r%s   ", line)
		p.onFrame = true
		return
	}
	if now := p.now(); now.Sub(p.last) >= p.every {
		p.last = now
		fmt.Fprintln(p.w, line)
	}
}

// final shows line as the last progress, ending the line.
func (p *progressPrinter) final(line string) {
	if p.tty {
		fmt.Fprintf(p.w, "\r%s   \n", line)
	} else {
		fmt.Fprintln(p.w, line)
	}
	p.onFrame = false
}

// close ends a \r frame left on screen (the demo stopped early), so that
// what is printed next starts on a line of its own.
func (p *progressPrinter) close() {
	if p.onFrame {
		fmt.Fprintln(p.w)
		p.onFrame = false
	}
}

// isTerminal reports whether w is a terminal: an *os.File on a character
// device. Anything else (a pipe, a regular file, a buffer) is not.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
