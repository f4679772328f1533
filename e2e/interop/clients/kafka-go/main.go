// kafka-go interop check (github.com/segmentio/kafka-go), run by e2e/interop/clients/run.sh.
//
//	kafka-go-check check BOOTSTRAP TOPIC RF
//	    creates TOPIC (3 partitions, replication factor RF) and checks, printing one
//	    PASS/FAIL line each:
//	    - Writer (RequiredAcks all, Hash balancer): 300 keyed messages in two waves whose
//	      CreateTime timestamps are set (wave 1 at BASE+i ms, wave 2 at MID+i ms, MID = BASE+60 s)
//	    - Conn.ReadFirstOffset / ReadLastOffset / ReadOffset(time) on each partition leader
//	      (ListOffsets v1: earliest, latest, by timestamp): first 0, the last offsets sum to 300,
//	      ReadOffset(MID) = the partition's wave-1 count, ReadOffset(BASE-1s) = 0, a timestamp
//	      after every record = -1
//	    - a partition Reader per partition from FirstOffset: every offset 0..last-1 in order,
//	      keys, values and timestamps as written; all 300 values exactly once
//	    - a group Reader (GroupID, StartOffset FirstOffset): all 300 exactly once, committed;
//	      OffsetFetch shows the commits at each partition's end
//	    - after 10 more messages a new group Reader in the same group reads exactly those 10
//	    - Client.AlterClientQuotas / DescribeClientQuotas: a consumer_byte_rate set on a client
//	      id of its own (an unknown key beside it refused), described, removed
//	kafka-go-check create-topic BOOTSTRAP TOPIC PARTITIONS RF
//	    creates a topic and waits until every partition has a leader (for the kcat checks)
//
// BOOTSTRAP is host:port or a comma-separated list. Exit status: 0 only if every check
// passed; 1 when one failed; 2 on a usage error.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	kafka "github.com/segmentio/kafka-go"
)

const (
	partitions = 3
	wave       = 150 // messages per wave; two waves
	more       = 10  // produced before the group resume check
)

var failed int

func pass(format string, a ...any) { fmt.Printf("PASS kafka-go: "+format+"\n", a...) }

func fail(format string, a ...any) {
	fmt.Printf("FAIL kafka-go: "+format+"\n", a...)
	failed++
}

// Errors kafka-go logs internally (retries, rebalances): on stderr, shown by run.sh on failure.
var errLog = kafka.LoggerFunc(func(msg string, a ...any) {
	fmt.Fprintf(os.Stderr, "kafka-go log: "+msg+"\n", a...)
})

func key(i int) string   { return fmt.Sprintf("k-%d", i) }
func value(i int) string { return fmt.Sprintf("kafka-go-%d", i) }

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	switch os.Args[1] {
	case "check":
		if len(os.Args) != 5 {
			usage()
		}
		rf, err := strconv.Atoi(os.Args[4])
		if err != nil {
			usage()
		}
		check(strings.Split(os.Args[2], ","), os.Args[3], rf)
	case "create-topic":
		if len(os.Args) != 6 {
			usage()
		}
		n, err1 := strconv.Atoi(os.Args[4])
		rf, err2 := strconv.Atoi(os.Args[5])
		if err1 != nil || err2 != nil {
			usage()
		}
		if err := createTopic(strings.Split(os.Args[2], ","), os.Args[3], n, rf); err != nil {
			fmt.Fprintf(os.Stderr, "kafka-go-check: create-topic %s: %v\n", os.Args[3], err)
			os.Exit(1)
		}
	default:
		usage()
	}
	if failed > 0 {
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: kafka-go-check check BOOTSTRAP TOPIC RF | create-topic BOOTSTRAP TOPIC PARTITIONS RF")
	os.Exit(2)
}

// createTopic creates the topic and waits (30 s) until metadata shows every partition with a
// leader.
func createTopic(brokers []string, topic string, n, rf int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 30 * time.Second}
	resp, err := client.CreateTopics(ctx, &kafka.CreateTopicsRequest{
		Topics: []kafka.TopicConfig{{Topic: topic, NumPartitions: n, ReplicationFactor: rf}},
	})
	if err != nil {
		return fmt.Errorf("CreateTopics: %w", err)
	}
	if err := resp.Errors[topic]; err != nil {
		return fmt.Errorf("CreateTopics answered for %s: %w", topic, err)
	}
	var last string
	for ctx.Err() == nil {
		md, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
		if err != nil {
			last = err.Error()
		} else if len(md.Topics) != 1 {
			last = fmt.Sprintf("metadata has %d topics", len(md.Topics))
		} else if t := md.Topics[0]; t.Error != nil {
			last = t.Error.Error()
		} else if len(t.Partitions) != n {
			last = fmt.Sprintf("%d partitions", len(t.Partitions))
		} else {
			ok := true
			for _, p := range t.Partitions {
				if p.Leader.Host == "" || len(p.Replicas) != rf {
					ok = false
					last = fmt.Sprintf("partition %d: leader %+v, %d replicas", p.ID, p.Leader, len(p.Replicas))
				}
			}
			if ok {
				return nil
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("topic %s not ready after 60 s (last: %s)", topic, last)
}

type record struct {
	partition int
	offset    int64
	key, val  string
	ts        time.Time
}

func check(brokers []string, topic string, rf int) {
	// CreateTime timestamps in the recent past (a broker refuses those too far in the future).
	base := time.Now().Add(-10 * time.Minute).Truncate(time.Millisecond)
	mid := base.Add(60 * time.Second)
	stamp := func(i int) time.Time {
		if i < wave {
			return base.Add(time.Duration(i) * time.Millisecond)
		}
		return mid.Add(time.Duration(i-wave) * time.Millisecond)
	}
	index := map[string]int{} // value -> i
	for i := 0; i < 2*wave+more; i++ {
		index[value(i)] = i
	}

	if err := createTopic(brokers, topic, partitions, rf); err != nil {
		fail("create topic %s (%d partitions, rf %d): %v", topic, partitions, rf, err)
		return
	}
	pass("Client.CreateTopics %s (%d partitions, rf %d), every partition has a leader", topic, partitions, rf)

	// --- produce -------------------------------------------------------------------------------
	w := &kafka.Writer{
		Addr:         kafka.TCP(brokers...),
		Topic:        topic,
		Balancer:     &kafka.Hash{},
		RequiredAcks: kafka.RequireAll,
		BatchTimeout: 10 * time.Millisecond,
		MaxAttempts:  10,
		ErrorLogger:  errLog,
	}
	write := func(from, to int) error {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		msgs := make([]kafka.Message, 0, to-from)
		for i := from; i < to; i++ {
			msgs = append(msgs, kafka.Message{Key: []byte(key(i)), Value: []byte(value(i)), Time: stamp(i)})
		}
		return w.WriteMessages(ctx, msgs...)
	}
	if err := write(0, wave); err != nil {
		fail("Writer.WriteMessages (wave 1, %d messages, RequiredAcks all): %v", wave, err)
		_ = w.Close()
		return
	}
	if err := write(wave, 2*wave); err != nil {
		fail("Writer.WriteMessages (wave 2, %d messages, RequiredAcks all): %v", wave, err)
		_ = w.Close()
		return
	}
	pass("Writer (RequiredAcks all, Hash balancer) wrote %d keyed messages in 2 waves with set timestamps", 2*wave)

	// --- ListOffsets v1 through Conn -------------------------------------------------------------
	ends := make([]int64, partitions)
	atMid := make([]int64, partitions)
	var total int64
	offsetsOK := true
	for p := 0; p < partitions; p++ {
		first, last, byMid, before, after, err := readOffsets(brokers[0], topic, p, base, mid)
		if err != nil {
			fail("partition %d: Conn ListOffsets: %v", p, err)
			offsetsOK = false
			continue
		}
		ends[p], atMid[p] = last, byMid
		total += last - first
		if first != 0 {
			fail("partition %d: ReadFirstOffset = %d, want 0", p, first)
			offsetsOK = false
		}
		if before != 0 && last > 0 {
			fail("partition %d: ReadOffset(BASE-1s) = %d, want 0 (the first record)", p, before)
			offsetsOK = false
		}
		if after != -1 {
			fail("partition %d: ReadOffset(after every record) = %d, want -1", p, after)
			offsetsOK = false
		}
		fmt.Fprintf(os.Stderr, "kafka-go: partition %d: first %d last %d ReadOffset(MID) %d ReadOffset(BASE-1s) %d ReadOffset(MID+1h) %d\n",
			p, first, last, byMid, before, after)
	}
	if offsetsOK && total != 2*wave {
		fail("ReadLastOffset - ReadFirstOffset summed over the partitions = %d, want %d (ends %v)", total, 2*wave, ends)
		offsetsOK = false
	}
	if offsetsOK {
		pass("Conn.ReadFirstOffset/ReadLastOffset (ListOffsets v1 earliest/latest): first 0 on every partition, last %v sums to %d", ends, total)
	}

	// --- partition readers from FirstOffset -------------------------------------------------------
	seen := map[int]int{}
	wave1 := make([]int64, partitions)
	readersOK := offsetsOK
	for p := 0; p < partitions && offsetsOK; p++ {
		recs, err := readPartition(brokers, topic, p, int(ends[p]))
		if err != nil {
			fail("partition %d: Reader from FirstOffset: %v", p, err)
			readersOK = false
			continue
		}
		for n, r := range recs {
			i, ok := index[r.val]
			switch {
			case r.offset != int64(n):
				fail("partition %d: Reader gave offset %d at position %d", p, r.offset, n)
				readersOK = false
			case !ok || i >= 2*wave:
				fail("partition %d offset %d: unexpected value %q", p, r.offset, r.val)
				readersOK = false
			case r.key != key(i):
				fail("partition %d offset %d: value %q has key %q, want %q", p, r.offset, r.val, r.key, key(i))
				readersOK = false
			case !r.ts.Equal(stamp(i)):
				fail("partition %d offset %d: value %q has timestamp %d, want %d", p, r.offset, r.val, r.ts.UnixMilli(), stamp(i).UnixMilli())
				readersOK = false
			}
			if ok {
				seen[i]++
				if i < wave {
					wave1[p]++
				}
			}
		}
	}
	if offsetsOK {
		if missing, dup := exactlyOnce(seen, 0, 2*wave); missing != "" || dup != "" {
			fail("partition Readers: values not seen exactly once (missing %s; more than once %s)", missing, dup)
			readersOK = false
		}
	}
	if readersOK {
		pass("Reader per partition from FirstOffset: offsets 0..last-1 in order, all %d keys, values and timestamps exactly once", 2*wave)
		tsOK := true
		for p := 0; p < partitions; p++ {
			// A partition holding only wave 1 has no record at or after MID: -1.
			want := wave1[p]
			if want == ends[p] {
				want = -1
			}
			if atMid[p] != want {
				fail("partition %d: ReadOffset(MID) (ListOffsets v1 by timestamp) = %d, want %d (its wave-1 records: %d of %d)",
					p, atMid[p], want, wave1[p], ends[p])
				tsOK = false
			}
		}
		if tsOK {
			pass("Conn.ReadOffset(time) (ListOffsets v1 by timestamp): MID gives each partition's first wave-2 offset %v, before BASE 0, after the end -1", atMid)
		}
	}

	// --- consumer group ------------------------------------------------------------------------
	group := topic + "-group"
	got, extra, err := readGroup(brokers, topic, group, 2*wave)
	if err != nil {
		fail("group Reader (GroupID %s, FirstOffset): %v", group, err)
		_ = w.Close()
		return
	}
	seen = map[int]int{}
	for _, r := range append(got, extra...) {
		if i, ok := index[r.val]; ok {
			seen[i]++
		} else {
			fail("group Reader: unexpected value %q", r.val)
		}
	}
	if missing, dup := exactlyOnce(seen, 0, 2*wave); missing != "" || dup != "" {
		fail("group Reader: values not seen exactly once (missing %s; more than once %s)", missing, dup)
	} else {
		pass("Reader in group %s from FirstOffset: all %d values exactly once, committed", group, 2*wave)
	}
	if err := checkCommitted(brokers, topic, group, ends); err != nil {
		fail("OffsetFetch for group %s: %v", group, err)
	} else {
		pass("OffsetFetch: group %s committed at each partition's end %v", group, ends)
	}

	if err := write(2*wave, 2*wave+more); err != nil {
		fail("Writer.WriteMessages (%d more): %v", more, err)
		_ = w.Close()
		return
	}
	_ = w.Close()
	got, extra, err = readGroup(brokers, topic, group, more)
	if err != nil {
		fail("second group Reader in %s: %v", group, err)
		return
	}
	var vals []string
	resumeOK := true
	for _, r := range append(got, extra...) {
		vals = append(vals, r.val)
		if i := index[r.val]; i < 2*wave {
			resumeOK = false
		}
	}
	seen = map[int]int{}
	for _, r := range append(got, extra...) {
		seen[index[r.val]]++
	}
	if missing, dup := exactlyOnce(seen, 2*wave, 2*wave+more); !resumeOK || missing != "" || dup != "" || len(extra) > 0 {
		fail("second group Reader in %s: want exactly the %d new values %s..%s, got %v", group, more, value(2*wave), value(2*wave+more-1), vals)
	} else {
		pass("a second Reader in group %s resumed at the commit: exactly the %d new values, nothing re-read", group, more)
	}

	checkQuotas(brokers, "kafka-go-quota-"+topic)
}

// checkQuotas sets a consumer byte rate on a client id of its own (no check connects with
// it) beside another entity with an unknown key, describes it, and removes it.
func checkQuotas(brokers []string, clientID string) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 30 * time.Second}
	entity := []kafka.AlterClientQuotaEntity{{EntityType: "client-id", EntityName: clientID}}
	other := []kafka.AlterClientQuotaEntity{{EntityType: "client-id", EntityName: clientID + "-other"}}
	set, err := client.AlterClientQuotas(ctx, &kafka.AlterClientQuotasRequest{
		Entries: []kafka.AlterClientQuotaEntry{
			{Entities: entity, Ops: []kafka.AlterClientQuotaOps{{Key: "consumer_byte_rate", Value: 4096}}},
			{Entities: other, Ops: []kafka.AlterClientQuotaOps{{Key: "no_such_quota", Value: 1}}},
		},
	})
	switch {
	case err != nil:
		fail("AlterClientQuotas: %v", err)
		return
	case len(set.Entries) != 2 || set.Entries[0].Error != nil || set.Entries[1].Error == nil:
		fail("AlterClientQuotas: want the rate set and the unknown key refused, got %+v", set.Entries)
		return
	}
	pass("AlterClientQuotas set consumer_byte_rate for client-id %s and refused an unknown key (%v)", clientID, set.Entries[1].Error)
	describe := &kafka.DescribeClientQuotasRequest{
		Components: []kafka.DescribeClientQuotasRequestComponent{{EntityType: "client-id", MatchType: 0, Match: clientID}},
	}
	// A cluster's other brokers apply the controller's metadata a moment later: a few tries.
	var got *kafka.DescribeClientQuotasResponse
	for try := 0; try < 10; try++ {
		got, err = client.DescribeClientQuotas(ctx, describe)
		if err == nil && got.Error == nil && len(got.Entries) == 1 {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	switch {
	case err != nil:
		fail("DescribeClientQuotas: %v", err)
	case got.Error != nil || len(got.Entries) != 1 || len(got.Entries[0].Values) != 1 ||
		got.Entries[0].Values[0].Key != "consumer_byte_rate" || got.Entries[0].Values[0].Value != 4096:
		fail("DescribeClientQuotas client-id %s: want consumer_byte_rate 4096, got %+v (error %v)", clientID, got.Entries, got.Error)
	default:
		pass("DescribeClientQuotas shows consumer_byte_rate 4096 for client-id %s", clientID)
	}
	removed, err := client.AlterClientQuotas(ctx, &kafka.AlterClientQuotasRequest{
		Entries: []kafka.AlterClientQuotaEntry{
			{Entities: entity, Ops: []kafka.AlterClientQuotaOps{{Key: "consumer_byte_rate", Remove: true}}},
		},
	})
	if err != nil || len(removed.Entries) != 1 || removed.Entries[0].Error != nil {
		fail("AlterClientQuotas remove: %v %+v", err, removed)
		return
	}
	for try := 0; try < 10; try++ {
		got, err = client.DescribeClientQuotas(ctx, describe)
		if err == nil && got.Error == nil && len(got.Entries) == 0 {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if err != nil || got.Error != nil || len(got.Entries) != 0 {
		fail("after removal DescribeClientQuotas client-id %s: want nothing, got %+v (%v, %v)", clientID, got, err, got.Error)
	} else {
		pass("AlterClientQuotas removed it: DescribeClientQuotas shows nothing for client-id %s", clientID)
	}
}

// readOffsets asks partition p's leader (ListOffsets v1) for its first and last offsets and
// for the offsets at timestamps MID, BASE-1s and MID+1h.
func readOffsets(bootstrap, topic string, p int, base, mid time.Time) (first, last, byMid, before, after int64, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := kafka.DialLeader(ctx, "tcp", bootstrap, topic, p)
	if err != nil {
		return 0, 0, 0, 0, 0, fmt.Errorf("DialLeader: %w", err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	if first, err = conn.ReadFirstOffset(); err != nil {
		return 0, 0, 0, 0, 0, fmt.Errorf("ReadFirstOffset: %w", err)
	}
	if last, err = conn.ReadLastOffset(); err != nil {
		return 0, 0, 0, 0, 0, fmt.Errorf("ReadLastOffset: %w", err)
	}
	if byMid, err = conn.ReadOffset(mid); err != nil {
		return 0, 0, 0, 0, 0, fmt.Errorf("ReadOffset(MID): %w", err)
	}
	if before, err = conn.ReadOffset(base.Add(-time.Second)); err != nil {
		return 0, 0, 0, 0, 0, fmt.Errorf("ReadOffset(BASE-1s): %w", err)
	}
	if after, err = conn.ReadOffset(mid.Add(time.Hour)); err != nil {
		return 0, 0, 0, 0, 0, fmt.Errorf("ReadOffset(MID+1h): %w", err)
	}
	return first, last, byMid, before, after, nil
}

func toRecord(m kafka.Message) record {
	return record{partition: m.Partition, offset: m.Offset, key: string(m.Key), val: string(m.Value), ts: m.Time}
}

// readPartition reads n messages of partition p with a Reader that starts at FirstOffset.
func readPartition(brokers []string, topic string, p, n int) ([]record, error) {
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers:     brokers,
		Topic:       topic,
		Partition:   p,
		StartOffset: kafka.FirstOffset,
		MinBytes:    1,
		MaxBytes:    1 << 20,
		MaxWait:     500 * time.Millisecond,
		ErrorLogger: errLog,
	})
	defer r.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var recs []record
	for len(recs) < n {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			return recs, fmt.Errorf("after %d of %d messages: %w", len(recs), n, err)
		}
		recs = append(recs, toRecord(m))
	}
	return recs, nil
}

// readGroup reads n messages with a Reader in the group (FirstOffset when it has no commit),
// committing them, then waits 2 s for anything more (returned as extra: re-reads or
// duplicates). The Reader leaves the group when closed.
func readGroup(brokers []string, topic, group string, n int) (got, extra []record, err error) {
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers:           brokers,
		GroupID:           group,
		Topic:             topic,
		StartOffset:       kafka.FirstOffset,
		MinBytes:          1,
		MaxBytes:          1 << 20,
		MaxWait:           500 * time.Millisecond,
		HeartbeatInterval: time.Second,
		SessionTimeout:    10 * time.Second,
		RebalanceTimeout:  10 * time.Second,
		CommitInterval:    0, // CommitMessages commits synchronously
		ErrorLogger:       errLog,
	})
	defer func() {
		if cerr := r.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("Reader.Close: %w", cerr)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	for len(got) < n {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			return got, nil, fmt.Errorf("after %d of %d messages: %w", len(got), n, err)
		}
		if err := r.CommitMessages(ctx, m); err != nil {
			return got, nil, fmt.Errorf("CommitMessages: %w", err)
		}
		got = append(got, toRecord(m))
	}
	quiet, cancelQuiet := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancelQuiet()
	for {
		m, err := r.FetchMessage(quiet)
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				return got, extra, nil
			}
			return got, extra, fmt.Errorf("waiting for more: %w", err)
		}
		extra = append(extra, toRecord(m))
	}
}

func checkCommitted(brokers []string, topic, group string, ends []int64) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 30 * time.Second}
	ps := make([]int, partitions)
	for p := range ps {
		ps[p] = p
	}
	resp, err := client.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: ps}})
	if err != nil {
		return err
	}
	if resp.Error != nil {
		return resp.Error
	}
	got := map[int]int64{}
	for _, p := range resp.Topics[topic] {
		if p.Error != nil {
			return fmt.Errorf("partition %d: %w", p.Partition, p.Error)
		}
		got[p.Partition] = p.CommittedOffset
	}
	for p := 0; p < partitions; p++ {
		if got[p] != ends[p] {
			return fmt.Errorf("committed offsets %v, want %v", got, ends)
		}
	}
	return nil
}

// exactlyOnce lists the values in [from, to) seen zero times and those seen more than once.
func exactlyOnce(seen map[int]int, from, to int) (missing, dup string) {
	var m, d []string
	for i := from; i < to; i++ {
		switch c := seen[i]; {
		case c == 0:
			m = append(m, strconv.Itoa(i))
		case c > 1:
			d = append(d, fmt.Sprintf("%d(x%d)", i, c))
		}
	}
	for i := range seen {
		if i < from || i >= to {
			d = append(d, fmt.Sprintf("%d(out of range)", i))
		}
	}
	sort.Strings(d)
	return short(m), short(d)
}

func short(xs []string) string {
	if len(xs) > 12 {
		return strings.Join(xs[:12], ",") + fmt.Sprintf(",... (%d)", len(xs))
	}
	return strings.Join(xs, ",")
}
