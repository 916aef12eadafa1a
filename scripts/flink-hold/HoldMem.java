import java.time.Duration;
import java.util.List;
import java.util.Map;
import org.apache.flink.api.common.eventtime.Watermark;
import org.apache.flink.api.common.eventtime.WatermarkGenerator;
import org.apache.flink.api.common.eventtime.WatermarkOutput;
import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.api.common.functions.MapFunction;
import org.apache.flink.cep.CEP;
import org.apache.flink.cep.functions.PatternProcessFunction;
import org.apache.flink.cep.nfa.aftermatch.AfterMatchSkipStrategy;
import org.apache.flink.cep.pattern.Pattern;
import org.apache.flink.cep.pattern.conditions.SimpleCondition;
import org.apache.flink.core.execution.JobClient;
import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.streaming.api.functions.sink.v2.DiscardingSink;
import org.apache.flink.util.Collector;

// The `cep bench --workload hold` job on Flink CEP 2.3 (heap state): key i gets one "fail" at
// time i, under login_fail with a 1 h window, so every key holds one partial match. The source
// then stops without ending the stream (an end would time everything out), and the live heap
// (after full GCs) and the process RSS are printed. Run with keys = 0 for the baseline.
// args: keys seconds-to-wait
public class HoldMem {
    static class Nothing extends PatternProcessFunction<Ev, Long> {
        public void processMatch(Map<String, List<Ev>> m, Context c, Collector<Long> o) {}
    }

    // A watermark right behind every event, so the last failure is handled without waiting.
    static class Behind implements WatermarkGenerator<Ev> {
        public void onEvent(Ev e, long ts, WatermarkOutput out) { out.emitWatermark(new Watermark(ts - 1)); }
        public void onPeriodicEmit(WatermarkOutput out) {}
    }

    static long usedAfterGc() throws InterruptedException {
        Runtime rt = Runtime.getRuntime();
        for (int i = 0; i < 4; i++) { System.gc(); Thread.sleep(300); }
        return rt.totalMemory() - rt.freeMemory();
    }

    static long rss() throws Exception {
        for (String l : java.nio.file.Files.readAllLines(java.nio.file.Path.of("/proc/self/status"))) {
            if (l.startsWith("VmRSS:")) return Long.parseLong(l.replaceAll("[^0-9]", "")) * 1024;
        }
        return -1;
    }

    public static void main(String[] args) throws Exception {
        final long keys = Long.parseLong(args[0]);
        long wait = args.length > 1 ? Long.parseLong(args[1]) : 30;
        StreamExecutionEnvironment env = StreamExecutionEnvironment.getExecutionEnvironment();
        env.setParallelism(1);
        // keys failures, then one event of another key an hour later (its watermark passes every
        // failure, and it starts nothing), then the source blocks.
        DataStream<Ev> input = env.fromSequence(0, keys + 1)
            .map((MapFunction<Long, Ev>) i -> {
                if (i < keys) return new Ev(i, "k" + i, i, "fail", (double) (i % 100));
                if (i == keys) return new Ev(i, "z", keys + 10, "ok", 0.0);
                Thread.sleep(Long.MAX_VALUE);
                return null;
            })
            .assignTimestampsAndWatermarks(WatermarkStrategy.<Ev>forGenerator(c -> new Behind())
                .withTimestampAssigner((e, t) -> e.ts));
        Pattern<Ev, Ev> p = Pattern.<Ev>begin("fail", AfterMatchSkipStrategy.skipPastLastEvent())
            .where(SimpleCondition.of(e -> e.type.equals("fail"))).times(3).consecutive()
            .within(Duration.ofHours(1));
        CEP.pattern(input.keyBy(e -> e.key), p).inEventTime().process(new Nothing())
            .sinkTo(new DiscardingSink<>());
        long before = usedAfterGc();
        long rssBefore = rss();
        JobClient job = env.executeAsync("hold");
        Thread.sleep(wait * 1000);
        long after = usedAfterGc();
        long rssAfter = rss();
        System.out.printf("flink hold keys=%d heap_before=%d heap_after=%d heap_bytes_per_key=%.0f rss_before=%d rss_after=%d%n",
            keys, before, after, keys > 0 ? (after - before) / (double) keys : 0.0, rssBefore, rssAfter);
        job.cancel().get();
        System.exit(0);
    }
}
