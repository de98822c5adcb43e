import LivePanel from "./live-panel";

export default function Home() {
  return <LivePanel />;
}
