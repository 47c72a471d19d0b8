// go-hub: a minimal push hub of the go-websocket-relay seed's design (Go +
// gorilla/websocket), FOR BENCHMARK COMPARISON ONLY (benches/hub/run.sh);
// not part of ws-relay-core and not meant for production.
//
// What it does (the seed's README, trimmed to what hub-load uses):
//   - GET /ws[?token=USER] upgrades to a WebSocket; a client may also send
//     {"event":"identify","data":{"token":"USER"}}. Several connections may
//     share a token.
//   - POST /api/push with X-API-KEY (or API-KEY header, or ?api_key=) and
//     {"event_name":..,"subject":..,"token":..,"delay_seconds":..}; clients
//     get {"event":event_name,"data":{"subject":..,"ts":<ms>,"token":<orig>}}.
//     Token rules: number -> string, string -> as is, object -> its "id" or
//     "user_id"; missing/null/unresolvable -> broadcast to every client.
//     Answer: {"code":0,"msg":"ok","delivered":N} (HTTP/1.1 keep-alive via
//     net/http), N = clients whose queue took the message.
//   - GET /health -> {"status":"ok"}.
//
// Structure: gorilla's chat-example shape. Each client has a buffered
// `send chan []byte` (256) and two goroutines, readPump and writePump;
// token -> clients maps live under one RWMutex (pushes answer with a
// synchronous `delivered` count, so they fan out under the read lock instead
// of going through a hub goroutine). A full queue drops that message for that
// client (it is not counted in `delivered`), as baseline-hub.rs does.
// writePump does one WriteMessage (one text frame) per queued message: no
// coalescing of queued messages into one frame (gorilla's chat example joins
// them with '\n' via NextWriter, which would break the seed's one-JSON-object-
// per-message format and hub-load's frame counting), and no ping ticker
// (hub-load counts every server frame and does not answer pings).
// Not implemented: delay_seconds (ignored), config.json, custom paths, Redis.
//
// Usage: go-hub PORT   (API key from $RELAY_API_KEY, default the bench key).
package main

import (
	"bytes"
	"encoding/json"
	"log"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

const (
	sendBuffer = 256
	writeWait  = 10 * time.Second
)

type client struct {
	send  chan []byte
	token string // "" = none; guarded by hub.mu
}

type hub struct {
	mu    sync.RWMutex
	all   map[*client]struct{}
	users map[string]map[*client]struct{}
}

func newHub() *hub {
	return &hub{all: map[*client]struct{}{}, users: map[string]map[*client]struct{}{}}
}

func (h *hub) register(c *client) {
	h.mu.Lock()
	h.all[c] = struct{}{}
	if c.token != "" {
		h.addUser(c, c.token)
	}
	h.mu.Unlock()
}

// addUser needs h.mu held for writing.
func (h *hub) addUser(c *client, token string) {
	m := h.users[token]
	if m == nil {
		m = map[*client]struct{}{}
		h.users[token] = m
	}
	m[c] = struct{}{}
	c.token = token
}

// removeUser needs h.mu held for writing.
func (h *hub) removeUser(c *client) {
	if c.token == "" {
		return
	}
	if m := h.users[c.token]; m != nil {
		delete(m, c)
		if len(m) == 0 {
			delete(h.users, c.token)
		}
	}
	c.token = ""
}

func (h *hub) identify(c *client, token string) {
	h.mu.Lock()
	h.removeUser(c)
	h.addUser(c, token)
	h.mu.Unlock()
}

// unregister removes c and closes its queue; senders hold the read lock, so
// nobody sends on the closed channel.
func (h *hub) unregister(c *client) {
	h.mu.Lock()
	if _, ok := h.all[c]; ok {
		delete(h.all, c)
		h.removeUser(c)
		close(c.send)
	}
	h.mu.Unlock()
}

// push queues msg for token's clients (every client if token == "") and
// returns how many queues took it.
func (h *hub) push(token string, msg []byte) int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	targets := h.all
	if token != "" {
		targets = h.users[token]
	}
	n := 0
	for c := range targets {
		select {
		case c.send <- msg:
			n++
		default: // queue full: drop this message for this client
		}
	}
	return n
}

var upgrader = websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}

func (h *hub) serveWS(w http.ResponseWriter, r *http.Request) {
	conn, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	c := &client{send: make(chan []byte, sendBuffer), token: r.URL.Query().Get("token")}
	h.register(c)
	go writePump(conn, c)
	readPump(conn, c, h)
}

func readPump(conn *websocket.Conn, c *client, h *hub) {
	defer func() {
		h.unregister(c)
		conn.Close()
	}()
	for {
		_, data, err := conn.ReadMessage()
		if err != nil {
			return
		}
		var m struct {
			Event string `json:"event"`
			Data  struct {
				Token json.RawMessage `json:"token"`
			} `json:"data"`
		}
		if json.Unmarshal(data, &m) != nil || m.Event != "identify" {
			continue
		}
		if t, ok := userID(m.Data.Token); ok {
			h.identify(c, t)
		}
	}
}

// writePump: one WriteMessage (one frame) per queued message.
func writePump(conn *websocket.Conn, c *client) {
	defer conn.Close()
	for msg := range c.send {
		conn.SetWriteDeadline(time.Now().Add(writeWait))
		if err := conn.WriteMessage(websocket.TextMessage, msg); err != nil {
			// Drain until readPump sees the closed conn and unregisters us.
			for range c.send {
			}
			return
		}
	}
	conn.SetWriteDeadline(time.Now().Add(writeWait))
	conn.WriteMessage(websocket.CloseMessage, []byte{})
}

// userID applies the seed's token rules; ok == false means broadcast.
func userID(raw json.RawMessage) (string, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return "", false
	}
	switch raw[0] {
	case '"':
		var s string
		if json.Unmarshal(raw, &s) != nil || s == "" {
			return "", false
		}
		return s, true
	case '{':
		var o map[string]json.RawMessage
		if json.Unmarshal(raw, &o) != nil {
			return "", false
		}
		for _, k := range []string{"id", "user_id"} {
			if v, ok := o[k]; ok && len(v) > 0 && v[0] != '{' {
				if s, ok := userID(v); ok {
					return s, true
				}
			}
		}
		return "", false
	case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		var n json.Number
		if json.Unmarshal(raw, &n) != nil {
			return "", false
		}
		return n.String(), true
	}
	return "", false // null, bool, array
}

type pushReq struct {
	EventName    string          `json:"event_name"`
	Subject      json.RawMessage `json:"subject"`
	Token        json.RawMessage `json:"token"`
	DelaySeconds int             `json:"delay_seconds"` // accepted, ignored here
}

type outData struct {
	Subject json.RawMessage `json:"subject"`
	Ts      int64           `json:"ts"`
	Token   json.RawMessage `json:"token"`
}

type outMsg struct {
	Event string  `json:"event"`
	Data  outData `json:"data"`
}

func reply(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	w.Write([]byte(body))
}

func (h *hub) servePush(key string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			reply(w, http.StatusMethodNotAllowed, `{"code":-1,"msg":"method not allowed"}`)
			return
		}
		k := r.Header.Get("X-API-KEY")
		if k == "" {
			k = r.Header.Get("API-KEY")
		}
		if k == "" {
			k = r.URL.Query().Get("api_key")
		}
		if k != key {
			reply(w, http.StatusUnauthorized, `{"code":-1,"msg":"invalid api key"}`)
			return
		}
		var req pushReq
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.EventName == "" {
			reply(w, http.StatusBadRequest, `{"code":-1,"msg":"invalid body"}`)
			return
		}
		null := json.RawMessage("null")
		out := outMsg{Event: req.EventName, Data: outData{Subject: req.Subject, Ts: time.Now().UnixMilli(), Token: req.Token}}
		if len(out.Data.Subject) == 0 {
			out.Data.Subject = null
		}
		if len(out.Data.Token) == 0 {
			out.Data.Token = null
		}
		msg, err := json.Marshal(out)
		if err != nil {
			reply(w, http.StatusBadRequest, `{"code":-1,"msg":"invalid body"}`)
			return
		}
		token, _ := userID(req.Token) // "" -> broadcast
		n := h.push(token, msg)
		reply(w, http.StatusOK, `{"code":0,"msg":"ok","delivered":`+strconv.Itoa(n)+`}`)
	}
}

func main() {
	port := os.Getenv("PORT")
	if len(os.Args) > 1 {
		port = os.Args[1]
	}
	if port == "" {
		port = "3000"
	}
	key := os.Getenv("RELAY_API_KEY")
	if key == "" {
		key = "bench-api-key-0123456789" // benches/hub/run.sh's KEY
	}
	h := newHub()
	mux := http.NewServeMux()
	mux.HandleFunc("/ws", h.serveWS)
	mux.HandleFunc("/api/push", h.servePush(key))
	mux.HandleFunc("/health", func(w http.ResponseWriter, r *http.Request) { reply(w, http.StatusOK, `{"status":"ok"}`) })
	addr := "127.0.0.1:" + port
	log.Printf("go-hub (seed design, comparison only) listening on http://%s, ws /ws, push /api/push", addr)
	log.Fatal(http.ListenAndServe(addr, mux))
}
