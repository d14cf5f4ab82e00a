#!/bin/sh
# Write a synthetic bird-feeder clip (H.264 mp4) for tests and demos, in well under a second.
#
#   scripts/make-sample-clip.sh OUT.mp4 [SECONDS=20] [WIDTH=640] [HEIGHT=360] [FPS=15]
#
# Scene: a green-grey background with a static blotchy noise texture and low temporal noise
# (about +-6 luma per pixel; below a threshold of 20 after a small blur). A dark brown
# ellipse, WIDTH/13 x HEIGHT/11 (48x32 at 640x360), visits in every 10 s cycle:
#   u = t mod 10:  0-2 s absent (quiet)  | 2-3 s enters from the left edge
#                  3-6 s wanders (never still) | 6-7 s leaves over the right edge
#                  7-10 s absent (quiet)
# So a 20 s clip has two visits, [2, 7) s and [12, 17) s, and quiet stretches between.
# yuv420p, key frame every second, no B-frames, +faststart: also servable over RTSP.
set -eu

if [ $# -lt 1 ] || [ $# -gt 5 ]; then
    echo "usage: $0 OUT.mp4 [SECONDS] [WIDTH] [HEIGHT] [FPS]" >&2
    exit 2
fi
out=$1
secs=${2:-20}
w=${3:-640}
h=${4:-360}
fps=${5:-15}
for n in "$secs" "$w" "$h" "$fps"; do
    case $n in
        '' | *[!0-9]*) echo "$0: SECONDS, WIDTH, HEIGHT and FPS must be positive integers" >&2; exit 2 ;;
    esac
done
if [ $((w % 2)) -ne 0 ] || [ $((h % 2)) -ne 0 ]; then
    echo "$0: WIDTH and HEIGHT must be even (yuv420p)" >&2
    exit 2
fi

bw=$((w / 13 / 2 * 2)); bh=$((h / 11 / 2 * 2))   # bird size, even
[ "$bw" -ge 4 ] || bw=4
[ "$bh" -ge 4 ] || bh=4
tw=$((w / 8)); th=$((h / 8))                     # texture cell grid
[ "$tw" -ge 2 ] || tw=2
[ "$th" -ge 2 ] || th=2
frames=$((secs * fps))

mkdir -p "$(dirname "$out")"

# Bird position, u = mod(t,10). Off screen (x=-10000) while absent.
u='mod(t,10)'
x0="(0.30*W)"
x="if(lt($u,2),-10000,if(lt($u,3),-w+($u-2)*($x0+w),if(lt($u,6),$x0+0.25*W*(1-cos(2*PI*($u-3)/3))+0.05*W*sin(2*PI*($u-3)),if(lt($u,7),$x0+($u-6)*(W-$x0),-10000))))"
y="(0.55*H+0.18*H*sin(2*PI*$u/1.5)-h/2)"

exec ffmpeg -hide_banner -loglevel error -nostdin -y \
    -filter_complex "
color=c=0x8c9c7c:s=${tw}x${th}:r=${fps},format=yuv420p,noise=c0s=40:c0f=u,
scale=${w}:${h}:flags=bilinear,setsar=1[bg];
color=c=0x3a2a1a:s=${bw}x${bh}:r=${fps},format=yuva420p,
geq=lum='lum(X,Y)':cb='cb(X,Y)':cr='cr(X,Y)':a='255*lte(pow((X-W/2+0.5)/(W/2),2)+pow((Y-H/2+0.5)/(H/2),2),1)'[bird];
[bg][bird]overlay=x='$x':y='$y':eval=frame:format=yuv420,noise=c0s=6:c0f=t+u,format=yuv420p[v]" \
    -map '[v]' -frames:v "$frames" -r "$fps" \
    -c:v libx264 -preset veryfast -crf 20 -pix_fmt yuv420p -g "$fps" -bf 0 \
    -movflags +faststart -an "$out"
