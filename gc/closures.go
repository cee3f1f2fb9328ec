package gc

// Closures walks the closures of one set of roots after another over a
// View's reachable graph (kiss roots list, kiss du): each walk visits every
// path of its closure once. It reads the graph into arrays once, since
// roots share most of their closures: each walk then costs array reads,
// not a decode of the walk's record per visit. Memory: 4 bytes per path
// for the offsets, 4 per edge, 4 per path for the visit marks.
type Closures struct {
	off   []int32 // edges of id are to[off[id]:off[id+1]]
	to    []PathID
	seen  []uint32 // generation marks: no clearing between walks
	gen   uint32
	stack []PathID
}

// NewClosures reads v's edges (References and Deriver, as the pruner keeps
// them). The error is the view's: its temporary files could not be read back.
func NewClosures(v *View) (*Closures, error) {
	n := v.Len()
	c := &Closures{off: make([]int32, n+1), seen: make([]uint32, n)}
	for id := range n {
		c.off[id] = int32(len(c.to))
		edges, err := v.Edges(PathID(id))
		if err != nil {
			return nil, err
		}
		for t := range edges {
			c.to = append(c.to, t)
		}
	}
	c.off[n] = int32(len(c.to))
	return c, nil
}

// Walk calls visit once for every path in the closure of start (start
// included).
func (c *Closures) Walk(start []PathID, visit func(PathID)) {
	c.gen++
	mark := c.gen
	c.stack = c.stack[:0]
	for _, id := range start {
		if c.seen[id] != mark {
			c.seen[id] = mark
			c.stack = append(c.stack, id)
		}
	}
	for len(c.stack) > 0 {
		id := c.stack[len(c.stack)-1]
		c.stack = c.stack[:len(c.stack)-1]
		visit(id)
		for _, t := range c.to[c.off[id]:c.off[id+1]] {
			if c.seen[t] != mark {
				c.seen[t] = mark
				c.stack = append(c.stack, t)
			}
		}
	}
}
